// Linear layers for decode shapes on AVX-512 CPUs: y[M, N] = x[M, K] @ W[N, K]^T * scale[N] + bias[N]
// for a few rows M (one decode step), weights in float32, bfloat16 or int8.
//
// Why: at M = 1..16 a linear layer reads every weight once and does almost no arithmetic, so it can run
// at the memory's read bandwidth. torch's kernels do not for narrow weights (bf16 GEMV, int8 weight-only
// pack_mm) and re-pack the weight on every call at M = 8, so they reach a fraction of it
// (docs/performance.md, "Round 5: taskhub's skinny linear kernel"). Here each weight cache line is read
// once per pass of up to 8 rows, widened to fp32 in registers and multiplied into every row (fp32 accumulation, like
// torch's), and the next lines are prefetched, which is what narrow weights need to keep the memory busy.
//
// Built at first use by taskhub/native.py (torch.utils.cpp_extension, -march=native); registered as
// torch.ops.taskhub.skinny_linear.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

namespace {

constexpr int ROWS_PER_PASS = 8;        // x rows multiplied per read of the weights
constexpr int64_t PREFETCH_BYTES = 8192;  // how far ahead of each weight row's read position to prefetch

// Weight formats: `line` widens one 64-byte cache line to LINE / 16 vectors of 16 floats; `part` widens
// 16 elements (masked) for row ends that are not whole lines.
struct Fp32Weights {
  using T = float;
  static constexpr int LINE = 16;
  static inline void line(const T* p, __m512* v) { v[0] = _mm512_loadu_ps(p); }
  static inline __m512 part(const T* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};

struct Bf16Weights {  // a line's even elements in v[0], odd ones in v[1]: x is split the same way
  using T = at::BFloat16;
  static constexpr int LINE = 32;
  static inline void line(const T* p, __m512* v) {
    __m512i h = _mm512_loadu_si512(p);
    v[0] = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    v[1] = _mm512_castsi512_ps(_mm512_and_si512(h, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static inline __m512 part(const T* p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
  }
};

struct Int8Weights {
  using T = int8_t;
  static constexpr int LINE = 64;
  static inline __m512 widen(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }
  static inline void line(const T* p, __m512* v) {
    for (int u = 0; u < 4; ++u) v[u] = widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * u)));
  }
  static inline __m512 part(const T* p, __mmask16 m) { return widen(_mm_maskz_loadu_epi8(m, p)); }
};

// sums[m * NB + j] = dot(x[m], w[j]) for M rows of x and NB consecutive weight rows, over K
template <class W, int M, int NB>
inline void dot_block(const float* x, const typename W::T* w, int64_t K, float* sums) {
  // the unrolled loops keep the M x NB accumulators in registers (rolled, GCC kept them on the stack)
  constexpr int L = W::LINE, U = L / 16;
  __m512 acc[M][NB];
  #pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + L <= K; k += L) {
    __m512 wv[NB][U];
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(w + j * K + k) + PREFETCH_BYTES, _MM_HINT_T0);
      W::line(w + j * K + k, wv[j]);
    }
    #pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
      #pragma GCC unroll 8
      for (int u = 0; u < U; ++u) {
        __m512 xv = _mm512_loadu_ps(x + m * K + k + 16 * u);
        #pragma GCC unroll 8
        for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_fmadd_ps(wv[j][u], xv, acc[m][j]);
      }
  }
  for (; k < K; k += 16) {
    __mmask16 mask = K - k >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 wv[NB];
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) wv[j] = W::part(w + j * K + k, mask);
    #pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * K + k);
      #pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_fmadd_ps(wv[j], xv, acc[m][j]);
    }
  }
  #pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) sums[m * NB + j] = _mm512_reduce_add_ps(acc[m][j]);
}

// Weight rows per block: as many as leave registers for the M x NB accumulators (32 zmm registers).
constexpr int rows_per_block(int M) { return M == 1 ? 8 : M == 2 ? 6 : M <= 4 ? 4 : 2; }

struct Epilogue {
  const float* scales;  // [N] or null
  const float* bias;    // [N] or null
  template <class Out>
  inline void store(const float* sums, int NB, int M, int64_t n0, int nb, int64_t N, Out* y) const {
    for (int m = 0; m < M; ++m)
      for (int j = 0; j < nb; ++j) {
        float v = sums[m * NB + j];
        if (scales) v *= scales[n0 + j];
        if (bias) v += bias[n0 + j];
        y[m * N + n0 + j] = static_cast<Out>(v);
      }
  }
};

// y rows 0..M-1, outputs n0 .. n0 + NB - 1 (fewer at the weight's end, one row at a time)
template <class W, class Out, int M, int NB>
inline void block_rows(const float* x, const typename W::T* w, int64_t n0, int64_t N, int64_t K, Epilogue epi,
                       Out* y) {
  float sums[M * NB];
  if (n0 + NB <= N) {
    dot_block<W, M, NB>(x, w + n0 * K, K, sums);
    epi.store(sums, NB, M, n0, NB, N, y);
  } else {
    for (int64_t n = n0; n < N; ++n) {
      dot_block<W, M, 1>(x, w + n * K, K, sums);
      epi.store(sums, 1, M, n, 1, N, y);
    }
  }
}

template <class W, class Out, int M>
void pass_rows(const float* x, const typename W::T* w, int64_t N, int64_t K, Epilogue epi, Out* y) {
  constexpr int NB = rows_per_block(M);
  const int64_t blocks = (N + NB - 1) / NB;
  const int64_t grain = std::max<int64_t>(1, 16384 / (K * NB));  // at least ~16k weights per task
  at::parallel_for(0, blocks, grain, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) block_rows<W, Out, M, NB>(x, w, b * NB, N, K, epi, y);
  });
}

// fp32 weights and more than ROWS_PER_PASS rows (many decoding sequences): the weights are read from memory
// once and reused from cache, so each thread takes a tile of TILE_WEIGHT_ROWS weight rows and multiplies every
// group of TILE_ROWS x rows into it while the tile sits in L1. Reading weights in their own [N, K] layout is
// what lets this beat a GEMM that re-packs them on every call (MKL's sgemm at tens of rows).
constexpr int TILE_ROWS = 4;
constexpr int TILE_WEIGHT_ROWS = 6;

template <class W, class Out>
void tiled(int64_t M, const float* x, const typename W::T* w, int64_t N, int64_t K, Epilogue epi, Out* y) {
  const int64_t tiles = (N + TILE_WEIGHT_ROWS - 1) / TILE_WEIGHT_ROWS;
  const int64_t grain = std::max<int64_t>(1, 16384 / (K * TILE_WEIGHT_ROWS));
  at::parallel_for(0, tiles, grain, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t n0 = t * TILE_WEIGHT_ROWS;
      constexpr int NB = TILE_WEIGHT_ROWS;
      int64_t m0 = 0;
      for (; m0 + TILE_ROWS <= M; m0 += TILE_ROWS)
        block_rows<W, Out, TILE_ROWS, NB>(x + m0 * K, w, n0, N, K, epi, y + m0 * N);
      switch (M - m0) {
        case 1: block_rows<W, Out, 1, NB>(x + m0 * K, w, n0, N, K, epi, y + m0 * N); break;
        case 2: block_rows<W, Out, 2, NB>(x + m0 * K, w, n0, N, K, epi, y + m0 * N); break;
        case 3: block_rows<W, Out, 3, NB>(x + m0 * K, w, n0, N, K, epi, y + m0 * N); break;
        default: break;
      }
    }
  });
}

template <class W, class Out>
void one_pass(int64_t M, const float* x, const typename W::T* w, int64_t N, int64_t K, Epilogue epi, Out* y) {
  switch (M) {
    case 1: return pass_rows<W, Out, 1>(x, w, N, K, epi, y);
    case 2: return pass_rows<W, Out, 2>(x, w, N, K, epi, y);
    case 3: return pass_rows<W, Out, 3>(x, w, N, K, epi, y);
    case 4: return pass_rows<W, Out, 4>(x, w, N, K, epi, y);
    case 5: return pass_rows<W, Out, 5>(x, w, N, K, epi, y);
    case 6: return pass_rows<W, Out, 6>(x, w, N, K, epi, y);
    case 7: return pass_rows<W, Out, 7>(x, w, N, K, epi, y);
    default: return pass_rows<W, Out, 8>(x, w, N, K, epi, y);
  }
}

// x as fp32 rows, each whole 32-element line of a row split into its even then its odd elements
// (Bf16Weights::line's order)
at::Tensor split_even_odd(const at::Tensor& x) {
  auto out = at::empty_like(x);
  const int64_t M = x.size(0), K = x.size(1);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    const float* s = src + m * K;
    float* d = dst + m * K;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
      for (int i = 0; i < 16; ++i) {
        d[k + i] = s[k + 2 * i];
        d[k + 16 + i] = s[k + 2 * i + 1];
      }
    for (; k < K; ++k) d[k] = s[k];
  }
  return out;
}

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& scales,
                         const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "skinny_linear runs on CPU tensors");
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "skinny_linear: weight must be a contiguous [out, in] matrix");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == K, "skinny_linear: x has ", x.size(-1), " features, the weight ", K);
  const auto wtype = weight.scalar_type();
  TORCH_CHECK(wtype == at::kFloat || wtype == at::kBFloat16 || wtype == at::kChar,
              "skinny_linear: weight dtype must be float32, bfloat16 or int8");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "skinny_linear: x dtype must be float32 or bfloat16");
  at::Tensor rows = x.reshape({-1, K}).to(at::kFloat).contiguous();
  if (wtype == at::kBFloat16) rows = split_even_odd(rows);
  at::Tensor s32, b32;
  Epilogue epi{nullptr, nullptr};
  if (scales) {
    TORCH_CHECK(scales->numel() == N, "skinny_linear: scales must have one value per output");
    s32 = scales->to(at::kFloat).contiguous();
    epi.scales = s32.data_ptr<float>();
  }
  if (bias) {
    TORCH_CHECK(bias->numel() == N, "skinny_linear: bias must have one value per output");
    b32 = bias->to(at::kFloat).contiguous();
    epi.bias = b32.data_ptr<float>();
  }
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  at::Tensor y = at::empty(sizes, x.options());
  const int64_t M = rows.size(0);
  const float* xp = rows.data_ptr<float>();
  auto all_passes = [&](auto* out) {
    using Out = std::remove_pointer_t<decltype(out)>;
    if (M > ROWS_PER_PASS && wtype == at::kFloat) {  // bf16 / int8 lines widen to 2-4 vectors: tiles spill
      tiled<Fp32Weights, Out>(M, xp, weight.data_ptr<float>(), N, K, epi, out);
      return;
    }
    for (int64_t m0 = 0; m0 < M; m0 += ROWS_PER_PASS) {
      const int64_t m = std::min<int64_t>(ROWS_PER_PASS, M - m0);
      const float* xm = xp + m0 * K;
      Out* ym = out + m0 * N;
      if (wtype == at::kFloat) one_pass<Fp32Weights, Out>(m, xm, weight.data_ptr<float>(), N, K, epi, ym);
      else if (wtype == at::kBFloat16) one_pass<Bf16Weights, Out>(m, xm, weight.data_ptr<at::BFloat16>(), N, K, epi, ym);
      else one_pass<Int8Weights, Out>(m, xm, weight.data_ptr<int8_t>(), N, K, epi, ym);
    }
  };
  if (y.scalar_type() == at::kFloat) all_passes(y.data_ptr<float>());
  else all_passes(y.data_ptr<at::BFloat16>());
  return y;
}

}  // namespace

TORCH_LIBRARY(taskhub, m) { m.def("skinny_linear(Tensor x, Tensor weight, Tensor? scales, Tensor? bias) -> Tensor"); }
TORCH_LIBRARY_IMPL(taskhub, CPU, m) { m.impl("skinny_linear", &skinny_linear); }
