// Bidirectional attention for encoders over packed sequences (no padding) on AVX-512 CPUs.
//
// Why: the encoders run their linears on the real tokens only, packed into one [N, .] matrix, and SDPA needs
// them scattered back onto a padded [B, T] grid and gathered again after (two copies of q, k, v and the
// output per layer, plus the padded keys' work). At encoder lengths (tens to a few hundred tokens, head
// size 32-128) that cost as much as the attention itself (docs/performance.md, "Round 7"). Here each
// (sequence, head) reads its queries, keys and values in place from the fused query/key/value output and
// writes its rows of the packed output. The math is SDPA's in fp32: scaled scores, softmax with the max
// subtracted, weighted sum of values.
//
// Built into taskhub's native library (taskhub/native.py); registered as torch.ops.taskhub.packed_attention.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

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

// softmax over the first len entries of a row in place, unnormalized; returns 1 / the sum of its exponentials
inline float softmax_unnormalized(float* row, int64_t len) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= len; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(row + j));
  const __mmask16 tail = static_cast<__mmask16>((1u << (len - j)) - 1);
  m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, row + j));
  return 1.0f / taskhub_vec::exp_sum(row, len, _mm512_reduce_max_ps(m));
}

// QB query rows of one (sequence, head): out[q] = softmax(scores[q]) @ V, V rows `ld` apart
template <int DV, int QB>
void attend_rows(const float* const* queries, float* const* outs, const float* kt, const float* v, int64_t ld,
                 int64_t len, int64_t lp, float scale, float* scores) {
  scores_block<QB>(queries, kt, DV * 16, lp, scale, scores);
  float inv[QB];
  for (int q = 0; q < QB; ++q) inv[q] = softmax_unnormalized(scores + q * lp, len);
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
  kt_buf.resize(std::max<size_t>(kt_buf.size(), d * lp));
  score_buf.resize(std::max<size_t>(score_buf.size(), QB * lp));
  float* kt = kt_buf.data();
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
    attend_rows<DV, QB>(queries, outs, kt, v, ld, len, lp, scale, score_buf.data());
  }
  for (; i < len; ++i) {
    const float* query = qkv + (first + i) * ld + h * d;
    float* o = out + (first + i) * hidden + h * d;
    attend_rows<DV, 1>(&query, &o, kt, v, ld, len, lp, scale, score_buf.data());
  }
}

// qkv [N, 3 * heads * d] fp32 (queries | keys | values, each head's d columns together), sequence s holding
// rows starts[s] .. starts[s + 1] - 1 -> [N, heads * d]
at::Tensor packed_attention(const at::Tensor& qkv, const at::Tensor& starts, int64_t heads, double scale) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == at::kFloat,
              "packed_attention: qkv must be 2-d float32 [tokens, 3 * hidden], got ", qkv.scalar_type(), " ",
              qkv.sizes());
  TORCH_CHECK(heads > 0 && qkv.size(1) % (3 * heads) == 0, "packed_attention: qkv width ", qkv.size(1),
              " is not 3 * heads * head_dim for heads = ", heads);
  const int64_t d = qkv.size(1) / (3 * heads), N = qkv.size(0);
  TORCH_CHECK(d % 16 == 0 && d <= 128, "packed_attention: head_dim must be a multiple of 16 up to 128, got ", d);
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
  m.def("packed_attention(Tensor qkv, Tensor starts, int heads, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(taskhub, CPU, m) { m.impl("packed_attention", &packed_attention); }
