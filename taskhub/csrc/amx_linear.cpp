// fp32 linear layers on Intel AMX: y = act(x @ W^T + b) (+ residual), each product split into three bf16 ones.
//
// Why: encoders are bound by fp32 GEMMs, and a CPU's fp32 FMA units cap them (MKL and oneDNN reach ~300
// GFLOP/s on this project's 2-core Xeon) while its AMX tiles multiply bf16 several times faster. Writing every
// fp32 number as hi + lo, two bf16 numbers (hi its nearest bf16, lo the nearest bf16 of the rest), and summing
// hi*hi + hi*lo + lo*hi in fp32 keeps about 16 bits of each product (relative error ~4e-6 against ~4e-7 for an
// fp32 GEMM; the dropped lo*lo term is below 2^-16): what torch calls float32 matmul precision "high"
// ("bf16x3"). No library here offers it on CPU (oneDNN's bf16 fpmath mode rounds to one bf16, torch's bf16
// GEMMs round their output to bf16), hence this kernel (docs/performance.md, "Round 7").
//
// Layout: the weight is split and packed once (`amx_pack_bf16x3`) into 16 x 32 bf16 B tiles in AMX's pair
// order; x is split per group of rows into a thread's buffer of 16 x 32 tiles, each contiguous. Each step
// of 32 k multiplies a 32 x 32 output block (four 16 x 16 fp32 tiles) by twelve tile products; k runs in
// chunks of up to 768 whose B tiles the group's row blocks reuse from L2, and bias, erf GELU and the residual
// add are applied as each block is written. Built into taskhub's native library (taskhub/native.py); on CPUs
// without AMX the op is compiled as a stub that refuses to run, and Python never offers it there.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "amx_tiles.h"
#include "vector_math.h"

namespace {

using namespace taskhub_amx;

constexpr int64_t GROUP_ROWS = 256;      // rows of x split at once: each B tile is reused by 8 row blocks
// amx_gelu_mlp_bf16x3: rows a thread carries through both linears at once (64 and 256 were slower: with
// MiniLM's 1536 hidden features both splits and the partial sums stay within a 2 MB L2), and hidden features
// finished per pass of the first linear (its partial sums: 64 KB)
constexpr int64_t MLP_ROWS = 128;
constexpr int64_t MLP_UP_BLOCKS = 4;

void check_packed(const at::Tensor& packed) {
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.dim() == 5 && packed.size(0) == 2 &&
                  packed.size(3) == 16 && packed.size(4) == 32 && packed.size(1) % 2 == 0 && packed.is_contiguous(),
              "amx_linear_bf16x3: packed must come from amx_pack_bf16x3 (bf16 [2, out/16, in/32, 16, 32]), got ",
              packed.scalar_type(), " ", packed.sizes());
}

// weight [out, in] fp32 -> [2 (hi, lo), out/16, in/32, 16, 32] bf16: B tiles holding W^T in AMX's pair order
at::Tensor amx_pack_bf16x3(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat,
              "amx_pack_bf16x3: weight must be 2-d float32 [out, in], got ", weight.scalar_type(), " ", weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(N % BLOCK == 0 && K % KSTEP == 0, "amx_pack_bf16x3: out and in must be multiples of 32, got ",
              weight.sizes());
  const auto w = weight.contiguous();
  auto packed = at::empty({2, N / TILE, K / KSTEP, TILE, 32}, weight.options().dtype(at::kBFloat16));
  const float* src = w.data_ptr<float>();
  at::BFloat16* hi = packed.data_ptr<at::BFloat16>();
  at::BFloat16* lo = hi + N * K;
  at::parallel_for(0, N / TILE, 1, [&](int64_t first, int64_t last) {
    for (int64_t nb = first; nb < last; ++nb)
      for (int64_t kb = 0; kb < K / KSTEP; ++kb) {
        const int64_t tile = (nb * (K / KSTEP) + kb) * B_TILE;
        for (int64_t pair = 0; pair < 16; ++pair)
          for (int64_t col = 0; col < TILE; ++col)
            for (int64_t i = 0; i < 2; ++i) {  // element (k = 2 pair + i, n = col) sits at [pair][2 col + i]
              const float v = src[(nb * TILE + col) * K + kb * KSTEP + 2 * pair + i];
              const at::BFloat16 h(v);
              hi[tile + pair * 32 + col * 2 + i] = h;
              lo[tile + pair * 32 + col * 2 + i] = at::BFloat16(v - static_cast<float>(h));
            }
      }
  });
  return packed;
}

#if defined(__AMX_BF16__) && defined(__AVX512BF16__)

// bias (if any), then erf GELU (if asked) on 16 outputs starting at column n
inline __m512 bias_gelu(__m512 v, const float* bias, int64_t n, bool gelu) {
  if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + n));
  return gelu ? taskhub_vec::gelu16(v) : v;
}

// finish() for an fp32 output: out rows from the group's first row (row stride ldo), + residual (same layout)
struct WriteOut {
  float* out;
  const float* residual;
  int64_t ldo;
  const float* bias;
  bool gelu;
  void operator()(const float* block, int64_t r0, int64_t n0, int64_t rows) const {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < BLOCK; h += 16) {
        __m512 v = bias_gelu(_mm512_load_ps(block + r * BLOCK + h), bias, n0 + h, gelu);
        if (residual) v = _mm512_add_ps(v, _mm512_loadu_ps(residual + (r0 + r) * ldo + n0 + h));
        _mm512_storeu_ps(out + (r0 + r) * ldo + n0 + h, v);
      }
  }
};

// finish() for an input of the next linear: GELU(block + bias) split into hi / lo tiles (K in-features there)
struct WriteSplit {
  uint16_t* a;
  uint16_t* al;
  int64_t K;
  const float* bias;
  void operator()(const float* block, int64_t r0, int64_t n0, int64_t) const {
    alignas(64) float v[16];
    for (int64_t r = 0; r < BLOCK; ++r)  // every row, padding included: the next linear reads whole blocks
      for (int64_t h = 0; h < BLOCK; h += 16) {
        _mm512_store_ps(v, bias_gelu(_mm512_load_ps(block + r * BLOCK + h), bias, n0 + h, true));
        const int64_t t = tile_offset(r0 + r, n0 + h, K / KSTEP);
        split16(v, a + t, al + t);
      }
  }
};

#endif

struct LinearArgs {  // a call's checked operands, with the output shape
  int64_t N, K;
  std::vector<int64_t> out_shape;
};

LinearArgs check_linear(const char* op, const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias) {
  check_packed(packed);
  const int64_t N = packed.size(1) * TILE, K = packed.size(2) * KSTEP;
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1 && x.size(-1) == K, op, ": x must be float32 [..., ", K,
              "], got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(!bias || (bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == N), op,
              ": bias must be float32 [", N, "]");
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  return {N, K, out_shape};
}

void check_residual(const char* op, const c10::optional<at::Tensor>& residual, const std::vector<int64_t>& shape) {
  TORCH_CHECK(!residual || (residual->scalar_type() == at::kFloat && residual->sizes().vec() == shape), op,
              ": residual must be float32 ", at::IntArrayRef(shape));
}

const float* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

at::Tensor amx_linear_bf16x3(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                             bool gelu, const c10::optional<at::Tensor>& residual) {
  const LinearArgs args = check_linear("amx_linear_bf16x3", x, packed, bias);
  const int64_t N = args.N, K = args.K;
  const auto& out_shape = args.out_shape;
  check_residual("amx_linear_bf16x3", residual, out_shape);
#if defined(__AMX_BF16__) && defined(__AVX512BF16__)
  TORCH_CHECK(amx_permitted(), "amx_linear_bf16x3: the kernel refused AMX's tile state to this process");
  const auto xs = x.reshape({-1, K}).contiguous();
  const int64_t M = xs.size(0);
  // rows padded to whole blocks: partial sums of every block live in the output itself between k chunks
  auto out = at::empty({(M + BLOCK - 1) / BLOCK * BLOCK, N}, x.options());
  const auto bias_c = bias ? bias->contiguous() : at::Tensor();
  const auto res_c = residual ? residual->reshape({-1, N}).contiguous() : at::Tensor();
  const uint16_t* w_hi = reinterpret_cast<const uint16_t*>(packed.data_ptr());
  const int64_t blocks_n = N / BLOCK, groups = (M + GROUP_ROWS - 1) / GROUP_ROWS;
  // work items (group of rows, chunk of columns): at least 4 so both threads stay busy on short inputs
  const int64_t chunk = std::max<int64_t>(1, blocks_n / ((4 + groups - 1) / groups));
  const int64_t chunks = (blocks_n + chunk - 1) / chunk;
  at::parallel_for(0, groups * chunks, 1, [&](int64_t first, int64_t last) {
    configure_tiles();
    thread_local std::vector<uint16_t> split;
    uint16_t* a = thread_buffer(split, GROUP_ROWS * K);
    int64_t split_group = -1;
    for (int64_t item = first; item < last; ++item) {
      const int64_t g = item / chunks, row0 = g * GROUP_ROWS, rows = std::min(GROUP_ROWS, M - row0);
      if (g != split_group) {  // consecutive items share their group: split it once
        split_rows(xs.data_ptr<float>() + row0 * K, K, rows, K, a, a + GROUP_ROWS * K);
        split_group = g;
      }
      const int64_t c0 = (item % chunks) * chunk, c1 = std::min(blocks_n, c0 + chunk);
      float* o = out.data_ptr<float>() + row0 * N;
      const float* res = residual ? res_c.data_ptr<float>() + row0 * N : nullptr;
      multiply_group(a, a + GROUP_ROWS * K, rows, K, w_hi, w_hi + N * K, c0, c1, o + c0 * BLOCK, N,
                     WriteOut{o, res, N, data_or_null(bias_c), gelu});
    }
    _tile_release();
  });
  return out.narrow(0, 0, M).view(out_shape);
#else
  TORCH_CHECK(false, "amx_linear_bf16x3: this CPU has no AMX-BF16; taskhub does not offer the kernel here");
#endif
}

// x + down(GELU(up(x))), both linears packed by amx_pack_bf16x3: a transformer's feed-forward block. Each thread
// takes groups of rows through both linears; the GELU output goes from the first linear's tiles straight into
// the second's split input in the thread's buffer (L2-sized), never to memory as fp32 and never re-split.
at::Tensor amx_gelu_mlp_bf16x3(const at::Tensor& x, const at::Tensor& up, const c10::optional<at::Tensor>& up_bias,
                               const at::Tensor& down, const c10::optional<at::Tensor>& down_bias,
                               const c10::optional<at::Tensor>& residual) {
  const char* op = "amx_gelu_mlp_bf16x3";
  const LinearArgs args = check_linear(op, x, up, up_bias);
  const int64_t hidden = args.N, K = args.K;
  check_packed(down);
  const int64_t N = down.size(1) * TILE;
  TORCH_CHECK(down.size(2) * KSTEP == hidden, op, ": down must take the up linear's ", hidden, " outputs, got packed ",
              down.sizes());
  TORCH_CHECK(!down_bias || (down_bias->scalar_type() == at::kFloat && down_bias->dim() == 1 && down_bias->size(0) == N),
              op, ": down_bias must be float32 [", N, "]");
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  check_residual(op, residual, out_shape);
#if defined(__AMX_BF16__) && defined(__AVX512BF16__)
  TORCH_CHECK(amx_permitted(), op, ": the kernel refused AMX's tile state to this process");
  const auto xs = x.reshape({-1, K}).contiguous();
  const int64_t M = xs.size(0);
  auto out = at::empty({(M + BLOCK - 1) / BLOCK * BLOCK, N}, x.options());
  const auto up_b = up_bias ? up_bias->contiguous() : at::Tensor();
  const auto down_b = down_bias ? down_bias->contiguous() : at::Tensor();
  const auto res_c = residual ? residual->reshape({-1, N}).contiguous() : at::Tensor();
  const uint16_t* up_hi = reinterpret_cast<const uint16_t*>(up.data_ptr());
  const uint16_t* down_hi = reinterpret_cast<const uint16_t*>(down.data_ptr());
  // groups small enough that every thread gets work, at most MLP_ROWS (both splits and the partial sums in L2)
  const int64_t threads = at::get_num_threads();
  const int64_t group = std::min(MLP_ROWS, std::max<int64_t>(BLOCK, (M + threads - 1) / threads + BLOCK - 1) / BLOCK * BLOCK);
  const int64_t up_chunk = std::min<int64_t>(MLP_UP_BLOCKS, hidden / BLOCK);
  at::parallel_for(0, (M + group - 1) / group, 1, [&](int64_t first, int64_t last) {
    configure_tiles();
    thread_local std::vector<uint16_t> x_split, h_split;
    thread_local std::vector<float> partial;
    uint16_t* a = thread_buffer(x_split, group * K);
    uint16_t* h = thread_buffer(h_split, group * hidden);
    float* up_partial = grown(partial, group * up_chunk * BLOCK);
    for (int64_t g = first; g < last; ++g) {
      const int64_t row0 = g * group, rows = std::min(group, M - row0);
      split_rows(xs.data_ptr<float>() + row0 * K, K, rows, K, a, a + group * K);
      const WriteSplit to_hidden{h, h + group * hidden, hidden, data_or_null(up_b)};
      for (int64_t c0 = 0; c0 < hidden / BLOCK; c0 += up_chunk)
        multiply_group(a, a + group * K, rows, K, up_hi, up_hi + hidden * K, c0,
                       std::min(hidden / BLOCK, c0 + up_chunk), up_partial, up_chunk * BLOCK, to_hidden);
      float* o = out.data_ptr<float>() + row0 * N;
      const float* res = residual ? res_c.data_ptr<float>() + row0 * N : nullptr;
      multiply_group(h, h + group * hidden, rows, hidden, down_hi, down_hi + N * hidden, 0, N / BLOCK, o, N,
                     WriteOut{o, res, N, data_or_null(down_b), false});
    }
    _tile_release();
  });
  return out.narrow(0, 0, M).view(out_shape);
#else
  TORCH_CHECK(false, op, ": this CPU has no AMX-BF16; taskhub does not offer the kernel here");
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(taskhub, m) {
  m.def("amx_pack_bf16x3(Tensor weight) -> Tensor");
  m.def("amx_linear_bf16x3(Tensor x, Tensor packed, Tensor? bias, bool gelu, Tensor? residual) -> Tensor");
  m.def("amx_gelu_mlp_bf16x3(Tensor x, Tensor up, Tensor? up_bias, Tensor down, Tensor? down_bias, Tensor? residual) -> Tensor");
}
TORCH_LIBRARY_IMPL(taskhub, CPU, m) {
  m.impl("amx_pack_bf16x3", &amx_pack_bf16x3);
  m.impl("amx_linear_bf16x3", &amx_linear_bf16x3);
  m.impl("amx_gelu_mlp_bf16x3", &amx_gelu_mlp_bf16x3);
}
