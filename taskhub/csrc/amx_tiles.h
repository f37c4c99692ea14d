// AMX tile primitives shared by taskhub's fp32-as-bf16x3 ops (amx_linear.cpp, amx_attention.cpp): every fp32
// operand is split into hi + lo bf16 parts and each product summed as hi*hi + hi*lo + lo*hi in fp32 tiles.
//
// Layouts: an A operand (rows x K) is split into 16 x 32 bf16 tiles, each contiguous, the k steps of a row tile
// in turn (`tile_offset`); a B operand (K x N, given as N x K like a linear's weight) is packed into 16 x 32
// bf16 tiles in AMX's pair order (`pack_b`). `multiply_group` multiplies them in 32 x 32 output blocks and
// hands each finished block to its caller.
#pragma once
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace taskhub_amx {

inline constexpr int64_t TILE = 16;             // a C tile is 16 x 16 fp32; an A tile 16 rows x 32 bf16
inline constexpr int64_t BLOCK = 32;            // output block: 2 x 2 C tiles
inline constexpr int64_t KSTEP = 32;            // k per tile product
inline constexpr int64_t B_TILE = 512;          // bf16 elements of one packed B tile (16 k pairs x 16 columns x 2)
// k per pass over a group's blocks: all of it up to 768, else 768. Each chunk ends with its partial sums stored
// and reloaded, the tile pipeline drained; 768 measured 1.04-1.12x over 128 / 256 (MiniLM and ViT-base
// shapes, interleaved A/B: docs/performance.md, "Round 8"), 1536 and whole K no better
inline int64_t k_chunk(int64_t K) { return std::min<int64_t>(K, 768); }

// a thread's scratch buffer with room for `size` elements: grows to the largest call's, kept across calls
template <class T>
T* grown(std::vector<T>& buffer, int64_t size) {
  if (buffer.size() < static_cast<size_t>(size)) buffer.resize(size);
  return buffer.data();
}

#if defined(__AMX_BF16__) && defined(__AVX512BF16__)

inline bool amx_permitted() {  // Linux hands out AMX's tile state only on request, once per process
  static const bool ok = [] {
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  }();
  return ok;
}

inline void configure_tiles() {  // tiles 0-3: C (16 x 16 fp32), 4-5: A (16 x 32 bf16), 6-7: B (16 x 16 pairs)
  struct alignas(64) {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  } config;
  for (int t = 0; t < 8; ++t) config.rows[t] = TILE, config.colsb[t] = 64;
  _tile_loadconfig(&config);
}

inline __m512 widen(__m256bh h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(h)), 16));
}

// two rows of 16 bf16 -> 16 pairs (a[i], b[i]) as AMX's B tiles hold them
inline __m512i pairs(__m256bh a, __m256bh b) {
  const __m512i low = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(a));
  return _mm512_or_si512(low, _mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(b)), 16));
}

// 16 floats -> their nearest bf16 (hi) and the nearest bf16 of what hi leaves (lo)
inline void split(__m512 v, __m256bh& hi, __m256bh& lo) {
  hi = _mm512_cvtneps_pbh(v);
  lo = _mm512_cvtneps_pbh(_mm512_sub_ps(v, widen(hi)));
}

// split() of 16 floats in memory, hi and lo stored as 16 bf16 each
inline void split16(const float* x, uint16_t* hi, uint16_t* lo) {
  __m256bh h, l;
  split(_mm512_loadu_ps(x), h, l);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi), reinterpret_cast<__m256i>(h));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo), reinterpret_cast<__m256i>(l));
}

// C tiles 0-3 += the 32 x 32 block's products over k steps [k0, k1). A: the block's two row tiles, hi at a and
// lo at al, each k step's 16 x 32 tile contiguous (`a_next` elements to the second row tile); B: the block's
// first 16 columns at b (hi) / bl (lo), the next 16 columns `b_next` further. Order hi*lo, hi*hi, lo*hi: each
// switch reloads one operand pair only (8 tile loads per 12 products).
inline void block_products(const uint16_t* a, const uint16_t* al, int64_t a_next, const uint16_t* b,
                           const uint16_t* bl, int64_t b_next, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t t = k * B_TILE;
    _tile_loadd(4, a + t, 64);
    _tile_loadd(5, a + a_next + t, 64);
    _tile_loadd(6, bl + t, 64);
    _tile_loadd(7, bl + b_next + t, 64);
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);  // hi lo
    _tile_loadd(6, b + t, 64);
    _tile_loadd(7, b + b_next + t, 64);
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);  // hi hi
    _tile_loadd(4, al + t, 64);
    _tile_loadd(5, al + a_next + t, 64);
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);  // lo hi
  }
}

// where x's element (row, k) of a split group sits: 16 x 32 tiles, each contiguous, k steps of a row tile in turn
inline int64_t tile_offset(int64_t row, int64_t k, int64_t ksteps) {
  return ((row / TILE) * ksteps + k / KSTEP) * B_TILE + (row % TILE) * KSTEP + k % KSTEP;
}

inline void tiles_to(float* c, int64_t ldc) {
  _tile_stored(0, c, ldc * 4); _tile_stored(1, c + TILE, ldc * 4);
  _tile_stored(2, c + TILE * ldc, ldc * 4); _tile_stored(3, c + TILE * ldc + TILE, ldc * 4);
}

inline void tiles_from(const float* c, int64_t ldc) {
  _tile_loadd(0, c, ldc * 4); _tile_loadd(1, c + TILE, ldc * 4);
  _tile_loadd(2, c + TILE * ldc, ldc * 4); _tile_loadd(3, c + TILE * ldc + TILE, ldc * 4);
}

// x's rows [0, rows) (row stride ld) as hi / lo tiles at a / al (tile_offset layout), zero rows up to a whole block
inline void split_rows(const float* x, int64_t ld, int64_t rows, int64_t K, uint16_t* a, uint16_t* al) {
  const int64_t ksteps = K / KSTEP;
  for (int64_t r = 0; r < (rows + BLOCK - 1) / BLOCK * BLOCK; ++r)
    for (int64_t k = 0; k < K; k += 16) {
      const int64_t t = tile_offset(r, k, ksteps);
      if (r < rows) {
        split16(x + r * ld + k, a + t, al + t);
      } else {
        std::memset(a + t, 0, 32);
        std::memset(al + t, 0, 32);
      }
    }
}

// The products of a split group of `rows` rows (a / al, K in-features) and output blocks [c0, c1) of a packed
// weight. Partial sums live at acc (row stride ldc, column 0 = block c0) between k chunks; each finished 32 x 32
// block goes to finish(block, first row in the group, first column, rows of it that are real).
template <class Finish>
void multiply_group(const uint16_t* a, const uint16_t* al, int64_t rows, int64_t K, const uint16_t* w_hi,
                    const uint16_t* w_lo, int64_t c0, int64_t c1, float* acc, int64_t ldc, Finish&& finish) {
  const int64_t ksteps = K / KSTEP, next = ksteps * B_TILE, kc = k_chunk(K) / KSTEP;
  const int64_t row_blocks = (rows + BLOCK - 1) / BLOCK;
  alignas(64) float block[BLOCK * BLOCK];
  for (int64_t k0 = 0; k0 < ksteps; k0 += kc) {
    const int64_t k1 = std::min(ksteps, k0 + kc);
    for (int64_t nb = c0; nb < c1; ++nb) {
      const int64_t n0 = nb * BLOCK;
      for (int64_t rb = 0; rb < row_blocks; ++rb) {
        float* c = acc + rb * BLOCK * ldc + (nb - c0) * BLOCK;
        if (k0 == 0) {
          _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        } else {
          tiles_from(c, ldc);
        }
        block_products(a + rb * BLOCK * K, al + rb * BLOCK * K, TILE * K, w_hi + n0 / TILE * next,
                       w_lo + n0 / TILE * next, next, k0, k1);
        if (k1 < ksteps) {
          tiles_to(c, ldc);
        } else {
          tiles_to(block, BLOCK);
          finish(block, rb * BLOCK, n0, std::min(BLOCK, rows - rb * BLOCK));
        }
      }
    }
  }
}

// a thread's split rows: hi then lo halves of `elements` each, kept across calls
inline uint16_t* thread_buffer(std::vector<uint16_t>& buffer, int64_t elements) { return grown(buffer, 2 * elements); }

#endif

}  // namespace taskhub_amx
