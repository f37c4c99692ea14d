// Bidirectional attention for encoders over packed sequences (no padding) on AVX-512 CPUs.
//
// Why: the encoders run their linears on the real tokens only, packed into one [N, .] matrix, and SDPA needs
// them scattered back onto a padded [B, T] grid and gathered again after (two copies of q, k, v and the
// output per layer, plus the padded keys' work). At encoder lengths (tens to a few hundred tokens, head
// size 32-128) that cost as much as the attention itself (docs/performance.md, "Round 7"). Here each
// (sequence, head) reads its queries, keys and values in place from the fused query/key/value output and
// writes its rows of the packed output. The math is SDPA's in fp32: scaled scores, softmax with the max
// subtracted, weighted sum of values. With `bf16x3` (CPUs with AMX, head size a multiple of 32) both matmuls
// run on AMX tiles as three bf16 products (amx_tiles.h), the encoders' fp32 matmul precision "high"; the
// softmax stays fp32 on AVX-512 (docs/performance.md, "Round 8").
//
// Built into taskhub's native library (taskhub/native.py); registered as torch.ops.taskhub.packed_attention.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "amx_tiles.h"
#include "vector_math.h"

namespace {

// scores[q][j] = scale * <query q, key j> for QB queries, keys in kt ([d][lp], 16-aligned rows)
template <int QB>
void scores_block(const float* const* queries, const float* kt, int64_t d, int64_t lp, float scale, float* scores) {
  constexpr int KEY_BLOCK = QB >= 8 ? 3 : 4;  // key vectors (16 keys each) per score pass: <= 24 accumulators
  int64_t v = 0;
  for (; v + KEY_BLOCK <= lp / 16; v += KEY_BLOCK) {
    __m512 acc[QB][KEY_BLOCK];
    for (int q = 0; q < QB; ++q)
      for (int b = 0; b < KEY_BLOCK; ++b) acc[q][b] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      __m512 keys[KEY_BLOCK];
      for (int b = 0; b < KEY_BLOCK; ++b) keys[b] = _mm512_loadu_ps(kt + c * lp + (v + b) * 16);
      for (int q = 0; q < QB; ++q) {
        const __m512 x = _mm512_set1_ps(queries[q][c]);
        for (int b = 0; b < KEY_BLOCK; ++b) acc[q][b] = _mm512_fmadd_ps(x, keys[b], acc[q][b]);
      }
    }
    for (int q = 0; q < QB; ++q)
      for (int b = 0; b < KEY_BLOCK; ++b)
        _mm512_storeu_ps(scores + q * lp + (v + b) * 16, _mm512_mul_ps(acc[q][b], _mm512_set1_ps(scale)));
  }
  for (; v < lp / 16; ++v) {
    __m512 acc[QB];
    for (int q = 0; q < QB; ++q) acc[q] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      const __m512 keys = _mm512_loadu_ps(kt + c * lp + v * 16);
      for (int q = 0; q < QB; ++q) acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(queries[q][c]), keys, acc[q]);
    }
    for (int q = 0; q < QB; ++q) _mm512_storeu_ps(scores + q * lp + v * 16, _mm512_mul_ps(acc[q], _mm512_set1_ps(scale)));
  }
}

// QB query rows of one (sequence, head): out[q] = softmax(scores[q]) @ V, V rows `ld` apart
template <int DV, int QB>
void attend_rows(const float* const* queries, float* const* outs, const float* kt, const float* v, int64_t ld,
                 int64_t len, int64_t lp, float scale, float* scores) {
  scores_block<QB>(queries, kt, DV * 16, lp, scale, scores);
  float inv[QB];
  for (int q = 0; q < QB; ++q) inv[q] = taskhub_vec::softmax_unnormalized(scores + q * lp, len);
  __m512 acc[QB][DV];
  for (int q = 0; q < QB; ++q)
    for (int c = 0; c < DV; ++c) acc[q][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < len; ++j) {
    __m512 vals[DV];
    for (int c = 0; c < DV; ++c) vals[c] = _mm512_loadu_ps(v + j * ld + c * 16);
    for (int q = 0; q < QB; ++q) {
      const __m512 p = _mm512_set1_ps(scores[q * lp + j]);
      for (int c = 0; c < DV; ++c) acc[q][c] = _mm512_fmadd_ps(p, vals[c], acc[q][c]);
    }
  }
  for (int q = 0; q < QB; ++q)
    for (int c = 0; c < DV; ++c) _mm512_storeu_ps(outs[q] + c * 16, _mm512_mul_ps(acc[q][c], _mm512_set1_ps(inv[q])));
}

template <int DV>
void attend_sequence_head(const float* qkv, float* out, int64_t first, int64_t len, int64_t h, int64_t heads,
                          float scale) {
  constexpr int64_t d = DV * 16;
  // query rows per pass, their accumulators filling the registers: 8 at head size 32 (1.06x over 4 at MiniLM's
  // lengths; 6 at 64 was no faster than 4)
  constexpr int QB = DV <= 2 ? 8 : DV <= 4 ? 4 : 2;
  const int64_t hidden = heads * d, ld = 3 * hidden, lp = (len + 15) / 16 * 16;
  thread_local std::vector<float> kt_buf, score_buf;
  float* kt = taskhub_amx::grown(kt_buf, d * lp);
  float* scores = taskhub_amx::grown(score_buf, QB * lp);
  const float* k = qkv + first * ld + hidden + h * d;
  for (int64_t j = 0; j < len; ++j)
    for (int64_t c = 0; c < d; ++c) kt[c * lp + j] = k[j * ld + c];  // keys transposed: 16 keys per load
  for (int64_t c = 0; c < d; ++c) std::fill(kt + c * lp + len, kt + (c + 1) * lp, 0.0f);  // padded keys score 0
  const float* v = qkv + first * ld + 2 * hidden + h * d;
  int64_t i = 0;
  for (; i + QB <= len; i += QB) {
    const float* queries[QB];
    float* outs[QB];
    for (int q = 0; q < QB; ++q) {
      queries[q] = qkv + (first + i + q) * ld + h * d;
      outs[q] = out + (first + i + q) * hidden + h * d;
    }
    attend_rows<DV, QB>(queries, outs, kt, v, ld, len, lp, scale, scores);
  }
  for (; i < len; ++i) {
    const float* query = qkv + (first + i) * ld + h * d;
    float* o = out + (first + i) * hidden + h * d;
    attend_rows<DV, 1>(&query, &o, kt, v, ld, len, lp, scale, scores);
  }
}

#if defined(__AMX_BF16__) && defined(__AVX512BF16__)

using namespace taskhub_amx;

// keys j < len (rows `ld` apart, d values each; zero keys up to lp) -> B tiles of K^T for scores = Q K^T: the
// tile of keys n..n+15 and values c..c+31 holds in its row p each key's pair of values (c + 2p, c + 2p + 1).
// Each key is split into bf16 rows first (rows_hi / rows_lo, [lp][d]); the tiles are their transpose by pairs.
void pack_keys(const float* k, int64_t ld, int64_t len, int64_t lp, int64_t d, uint16_t* rows_hi, uint16_t* rows_lo,
               uint16_t* hi, uint16_t* lo) {
  split_rows(k, ld, len, d, rows_hi, rows_lo);  // tile layout: 16 keys x 32 values per tile, each contiguous
  // in that layout, value pair p of key c (of a 16-key, 32-value tile) is the tile's 32-bit word 16 c + p
  const __m512i words = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(16));
  const int64_t tiles = lp / TILE * (d / KSTEP);  // both layouts order tiles (16 keys, 32 values) alike
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t p = 0; p < 16; ++p) {
      const int64_t at = t * B_TILE;
      _mm512_storeu_si512(hi + at + p * 32, _mm512_i32gather_epi32(words, rows_hi + at + p * 2, 4));
      _mm512_storeu_si512(lo + at + p * 32, _mm512_i32gather_epi32(words, rows_lo + at + p * 2, 4));
    }
}

// values j < len (rows `ld` apart; zero up to lp) -> B tiles for out = P V: the tile of values c..c+15 and keys
// j..j+31 holds in its row p the pairs (key j + 2p, key j + 2p + 1) of each of the 16 values
void pack_values(const float* v, int64_t ld, int64_t len, int64_t lp, int64_t d, uint16_t* hi, uint16_t* lo) {
  const int64_t ksteps = lp / KSTEP;
  for (int64_t j = 0; j < lp; j += 2)
    for (int64_t c = 0; c < d; c += 16) {
      const __m512 v0 = j < len ? _mm512_loadu_ps(v + j * ld + c) : _mm512_setzero_ps();
      const __m512 v1 = j + 1 < len ? _mm512_loadu_ps(v + (j + 1) * ld + c) : _mm512_setzero_ps();
      __m256bh h0, l0, h1, l1;
      split(v0, h0, l0);
      split(v1, h1, l1);
      const int64_t at = ((c / TILE) * ksteps + j / KSTEP) * B_TILE + (j % KSTEP) / 2 * 32;
      _mm512_storeu_si512(hi + at, pairs(h0, h1));
      _mm512_storeu_si512(lo + at, pairs(l0, l1));
    }
}

struct AmxBuffers {  // a thread's operands for one (sequence, head), grown to the longest sequence seen
  std::vector<uint16_t> q, key_rows, keys, probs, values;
  std::vector<float> scores, partial, inverse_sums;
};

// one (sequence, head) on AMX: scores = scale Q K^T, P = softmax (unnormalized), out = P V / row sums
void attend_amx(const float* qkv, float* out, int64_t first, int64_t len, int64_t h, int64_t heads, int64_t d,
                float scale, AmxBuffers& buf) {
  const int64_t hidden = heads * d, ld = 3 * hidden, lp = (len + BLOCK - 1) / BLOCK * BLOCK;
  const float* q = qkv + first * ld + h * d;
  uint16_t* qa = thread_buffer(buf.q, lp * d);
  uint16_t* key_rows = thread_buffer(buf.key_rows, lp * d);
  uint16_t* keys = thread_buffer(buf.keys, lp * d);
  uint16_t* probs = thread_buffer(buf.probs, lp * lp);
  uint16_t* values = thread_buffer(buf.values, lp * d);
  float* scores = grown(buf.scores, lp * lp);
  float* partial = grown(buf.partial, lp * d);
  float* inverse = grown(buf.inverse_sums, lp);
  split_rows(q, ld, len, d, qa, qa + lp * d);
  pack_keys(q + hidden, ld, len, lp, d, key_rows, key_rows + lp * d, keys, keys + lp * d);
  multiply_group(qa, qa + lp * d, len, d, keys, keys + lp * d, 0, lp / BLOCK, scores, lp,
                 [&](const float* block, int64_t r0, int64_t n0, int64_t rows) {
                   for (int64_t r = 0; r < rows; ++r)
                     for (int64_t c = 0; c < BLOCK; c += 16)
                       _mm512_storeu_ps(scores + (r0 + r) * lp + n0 + c,
                                        _mm512_mul_ps(_mm512_load_ps(block + r * BLOCK + c), _mm512_set1_ps(scale)));
                 });
  for (int64_t r = 0; r < lp; ++r) {  // each row's probabilities split while in L1; padded keys and rows get 0
    float* row = scores + r * lp;
    if (r < len) {
      inverse[r] = taskhub_vec::softmax_unnormalized(row, len);
      std::fill(row + len, row + lp, 0.0f);
    } else {
      std::fill(row, row + lp, 0.0f);
    }
    for (int64_t c = 0; c < lp; c += 16) {
      const int64_t t = tile_offset(r, c, lp / KSTEP);
      split16(row + c, probs + t, probs + lp * lp + t);
    }
  }
  pack_values(q + 2 * hidden, ld, len, lp, d, values, values + lp * d);
  float* o = out + first * hidden + h * d;
  multiply_group(probs, probs + lp * lp, len, lp, values, values + lp * d, 0, d / BLOCK, partial, d,
                 [&](const float* block, int64_t r0, int64_t n0, int64_t rows) {
                   for (int64_t r = 0; r < rows; ++r)
                     for (int64_t c = 0; c < BLOCK; c += 16)
                       _mm512_storeu_ps(o + (r0 + r) * hidden + n0 + c,
                                        _mm512_mul_ps(_mm512_load_ps(block + r * BLOCK + c),
                                                      _mm512_set1_ps(inverse[r0 + r])));
                 });
}

#endif

// qkv [N, 3 * heads * d] fp32 (queries | keys | values, each head's d columns together), sequence s holding
// rows starts[s] .. starts[s + 1] - 1 -> [N, heads * d]
at::Tensor packed_attention(const at::Tensor& qkv, const at::Tensor& starts, int64_t heads, double scale, bool bf16x3) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == at::kFloat,
              "packed_attention: qkv must be 2-d float32 [tokens, 3 * hidden], got ", qkv.scalar_type(), " ",
              qkv.sizes());
  TORCH_CHECK(heads > 0 && qkv.size(1) % (3 * heads) == 0, "packed_attention: qkv width ", qkv.size(1),
              " is not 3 * heads * head_dim for heads = ", heads);
  const int64_t d = qkv.size(1) / (3 * heads), N = qkv.size(0);
  TORCH_CHECK(d % 16 == 0 && d <= 128, "packed_attention: head_dim must be a multiple of 16 up to 128, got ", d);
#if defined(__AMX_BF16__) && defined(__AVX512BF16__)
  TORCH_CHECK(!bf16x3 || d % 32 == 0, "packed_attention: bf16x3 needs head_dim a multiple of 32, got ", d);
  TORCH_CHECK(!bf16x3 || amx_permitted(), "packed_attention: the kernel refused AMX's tile state to this process");
#else
  TORCH_CHECK(!bf16x3, "packed_attention: bf16x3 needs a CPU with AMX-BF16; this one has none");
#endif
  TORCH_CHECK(starts.dim() == 1 && starts.scalar_type() == at::kLong && starts.size(0) >= 1,
              "packed_attention: starts must be 1-d int64 [sequences + 1]");
  const auto st = starts.contiguous();
  const int64_t* s = st.data_ptr<int64_t>();
  const int64_t B = st.size(0) - 1;
  TORCH_CHECK(s[0] == 0 && s[B] == N, "packed_attention: starts must run from 0 to the number of rows (", N, ")");
  for (int64_t b = 0; b < B; ++b) TORCH_CHECK(s[b] <= s[b + 1], "packed_attention: starts must not decrease");
  const auto x = qkv.contiguous();
  auto out = at::empty({N, heads * d}, qkv.options());
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  // item = head * B + sequence: a thread's contiguous range spans every sequence, so long ones are shared
  at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
#if defined(__AMX_BF16__) && defined(__AVX512BF16__)
    if (bf16x3) {
      configure_tiles();
      thread_local AmxBuffers buffers;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item % B, h = item / B, len = s[b + 1] - s[b];
        if (len > 0) attend_amx(src, dst, s[b], len, h, heads, d, sc, buffers);
      }
      _tile_release();
      return;
    }
#endif
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item % B, h = item / B, len = s[b + 1] - s[b];
      if (len == 0) continue;
      switch (d / 16) {
        case 1: attend_sequence_head<1>(src, dst, s[b], len, h, heads, sc); break;
        case 2: attend_sequence_head<2>(src, dst, s[b], len, h, heads, sc); break;
        case 3: attend_sequence_head<3>(src, dst, s[b], len, h, heads, sc); break;
        case 4: attend_sequence_head<4>(src, dst, s[b], len, h, heads, sc); break;
        case 5: attend_sequence_head<5>(src, dst, s[b], len, h, heads, sc); break;
        case 6: attend_sequence_head<6>(src, dst, s[b], len, h, heads, sc); break;
        case 7: attend_sequence_head<7>(src, dst, s[b], len, h, heads, sc); break;
        default: attend_sequence_head<8>(src, dst, s[b], len, h, heads, sc); break;
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(taskhub, m) {
  m.def("packed_attention(Tensor qkv, Tensor starts, int heads, float scale, bool bf16x3=False) -> Tensor");
}
TORCH_LIBRARY_IMPL(taskhub, CPU, m) { m.impl("packed_attention", &packed_attention); }
