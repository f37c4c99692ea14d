// Decode attention over a paged KV cache on AVX-512 CPUs: one query per sequence, keys and values read in place
// from their blocks.
//
// Why: gathering every sequence's blocks into one padded batch for SDPA copies the whole cache of the step
// once more, and at tens of sequences with hundreds of tokens each that copy (and the padding it attends) costs
// more than the attention itself (docs/performance.md, "Round 6"). Here each (sequence, kv head) reads its keys
// and values once, straight from the store, for all the query heads that share them (grouped-query attention).
// The math is SDPA's: scores in fp32, softmax with the max subtracted, then the weighted sum of values.
//
// Registered as torch.ops.taskhub.paged_decode_attention; built with skinny_linear.cpp (taskhub/native.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include "vector_math.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace {

constexpr int MAX_VECS = 16;  // head_dim up to 256 (16 vectors of 16 floats)
constexpr int MAX_GROUP = 8;  // query heads per kv head

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const at::BFloat16* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

template <class KV, class Q>
void attend_one(const Q* q, const KV* k_store, const KV* v_store, const int64_t* table, int64_t start, int64_t len,
                int64_t block_size, int64_t kv_heads, int kvh, int group, int vecs, float scale, Q* out,
                std::vector<float>& scores) {
  const int64_t D = vecs * 16, L = len - start;
  const int64_t token_stride = kv_heads * D;  // between consecutive tokens of a block
  // key t's vector of this kv head, in k_store or v_store: block table[t / block_size], slot t % block_size
  auto at = [&](const KV* store, int64_t t) {
    return store + (table[t / block_size] * block_size + t % block_size) * token_stride + kvh * D;
  };
  scores.resize(group * L);
  __m512 qv[MAX_GROUP][MAX_VECS];
  for (int g = 0; g < group; ++g)
    for (int u = 0; u < vecs; ++u) qv[g][u] = _mm512_mul_ps(load16(q + g * D + 16 * u), _mm512_set1_ps(scale));
  float best[MAX_GROUP], total[MAX_GROUP];
  std::fill(best, best + group, -INFINITY);
  for (int64_t t = start; t < len; ++t) {
    const KV* k = at(k_store, t);
    for (int g = 0; g < group; ++g) {
      __m512 acc = _mm512_mul_ps(qv[g][0], load16(k));
      for (int u = 1; u < vecs; ++u) acc = _mm512_fmadd_ps(qv[g][u], load16(k + 16 * u), acc);
      const float s = _mm512_reduce_add_ps(acc);
      scores[g * L + t - start] = s;
      best[g] = std::max(best[g], s);
    }
  }
  for (int g = 0; g < group; ++g) total[g] = taskhub_vec::exp_sum(scores.data() + g * L, L, best[g]);
  __m512 acc[MAX_GROUP][MAX_VECS];
  for (int g = 0; g < group; ++g)
    for (int u = 0; u < vecs; ++u) acc[g][u] = _mm512_setzero_ps();
  for (int64_t t = start; t < len; ++t) {
    const KV* v = at(v_store, t);
    for (int u = 0; u < vecs; ++u) {
      const __m512 vv = load16(v + 16 * u);
      for (int g = 0; g < group; ++g)
        acc[g][u] = _mm512_fmadd_ps(_mm512_set1_ps(scores[g * L + t - start]), vv, acc[g][u]);
    }
  }
  for (int g = 0; g < group; ++g) {
    const __m512 inv = _mm512_set1_ps(1.0f / total[g]);
    for (int u = 0; u < vecs; ++u) {
      const __m512 o = _mm512_mul_ps(acc[g][u], inv);
      if constexpr (std::is_same_v<Q, float>) {
        _mm512_storeu_ps(out + g * D + 16 * u, o);
      } else {
        alignas(64) float tmp[16];
        _mm512_store_ps(tmp, o);
        for (int i = 0; i < 16; ++i) out[g * D + 16 * u + i] = static_cast<Q>(tmp[i]);
      }
    }
  }
}

// q [S, H, D]; k_store, v_store [num_blocks, block_size, kv_heads, D]; table [S, W] store blocks of each sequence;
// sequence s attends to the keys at positions start[s] .. len[s] - 1 of its blocks laid end to end.
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_store, const at::Tensor& v_store,
                                  const at::Tensor& table, const at::Tensor& start, const at::Tensor& len,
                                  double scale) {
  TORCH_CHECK(q.dim() == 3 && k_store.dim() == 4 && v_store.sizes() == k_store.sizes(),
              "paged_decode_attention: q must be [S, H, D] and the stores [blocks, block_size, kv_heads, D]");
  TORCH_CHECK(k_store.is_contiguous() && v_store.is_contiguous(), "paged_decode_attention: stores must be contiguous");
  TORCH_CHECK(k_store.scalar_type() == v_store.scalar_type() && q.scalar_type() == k_store.scalar_type() &&
                  (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16),
              "paged_decode_attention: q and the stores must share one dtype, float32 or bfloat16");
  const int64_t S = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t block_size = k_store.size(1), kv_heads = k_store.size(2);
  TORCH_CHECK(k_store.size(3) == D && D % 16 == 0 && D <= 16 * MAX_VECS,
              "paged_decode_attention: head_dim must match and be a multiple of 16 up to 256");
  TORCH_CHECK(H % kv_heads == 0 && H / kv_heads <= MAX_GROUP, "paged_decode_attention: at most 8 query heads per kv head");
  TORCH_CHECK(table.scalar_type() == at::kLong && table.dim() == 2 && table.size(0) == S && start.numel() == S &&
                  len.numel() == S && start.scalar_type() == at::kLong && len.scalar_type() == at::kLong,
              "paged_decode_attention: table [S, W], start [S] and len [S] must be int64");
  const at::Tensor qc = q.contiguous(), tc = table.contiguous(), sc = start.contiguous(), lc = len.contiguous();
  at::Tensor out = at::empty_like(qc);
  const int group = static_cast<int>(H / kv_heads), vecs = static_cast<int>(D / 16);
  const int64_t W = tc.size(1);
  const int64_t* tp = tc.data_ptr<int64_t>();
  const int64_t* sp = sc.data_ptr<int64_t>();
  const int64_t* lp = lc.data_ptr<int64_t>();
  const int64_t num_blocks = k_store.size(0);
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(0 <= sp[s] && sp[s] < lp[s] && lp[s] <= W * block_size,
                "paged_decode_attention: sequence ", s, " has no visible key or more keys than blocks");
    for (int64_t b = 0; b < (lp[s] + block_size - 1) / block_size; ++b)
      TORCH_CHECK(0 <= tp[s * W + b] && tp[s * W + b] < num_blocks, "paged_decode_attention: sequence ", s,
                  " names block ", tp[s * W + b], " of a store with ", num_blocks);
  }
  auto run = [&](auto* qp, auto* kp, auto* vp, auto* op) {
    at::parallel_for(0, S * kv_heads, 1, [&](int64_t first, int64_t last) {
      std::vector<float> scores;
      for (int64_t i = first; i < last; ++i) {
        const int64_t s = i / kv_heads;
        const int kvh = static_cast<int>(i % kv_heads);
        const int64_t head0 = (s * H + kvh * group) * D;
        attend_one(qp + head0, kp, vp, tp + s * W, sp[s], lp[s], block_size, kv_heads, kvh, group, vecs,
                   static_cast<float>(scale), op + head0, scores);
      }
    });
  };
  if (q.scalar_type() == at::kFloat)
    run(qc.data_ptr<float>(), k_store.data_ptr<float>(), v_store.data_ptr<float>(), out.data_ptr<float>());
  else
    run(qc.data_ptr<at::BFloat16>(), k_store.data_ptr<at::BFloat16>(), v_store.data_ptr<at::BFloat16>(),
        out.data_ptr<at::BFloat16>());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(taskhub, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_store, Tensor v_store, Tensor table, Tensor start, Tensor len, "
        "float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(taskhub, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
