// Linear layers whose weights stay in their storage dtype (bfloat16, float16, or int8 with one float32
// scale per output channel), called by MindSpore as AOT Custom ops (see mfcore/kernels/cpu.py). The
// activations and every sum are float32; a weight is widened to float32 in registers as it is read, so
// the model is held once, in 16 or 8 bits, and never upcast as a whole.
//   MfcoreLinearBf16  y = x . W^T            W (N, K) bfloat16
//   MfcoreLinearF16   y = x . W^T            W (N, K) float16
//   MfcoreLinearInt8  y = (x . Wq^T) * s     Wq (N, K) int8, s (N) float32: round-to-nearest, per channel
//   MfcoreEmbedBf16   y = table[ids]         table (V, H) bfloat16 -> float32 rows
// x is (rows, K). On AVX512_BF16 CPUs, bfloat16 and int8 weights take vdpbf16ps on tiles of 6 weight rows
// by up to 4 rows of x, x rounded to bfloat16 (linear_bf16_dot: memory bound up to ~6 rows, then compute
// bound). Elsewhere up to 4 rows (decode) stream each weight row once, and more rows widen a block of 4
// weight rows once into a float32 buffer and run 4x4 register tiles over it. All split the output
// channels over the OpenMP threads. The vector width is chosen when
// the library is compiled for the machine it runs on (-march=native): AVX-512, AVX2 + F16C + FMA, or
// plain C++ where neither exists.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <vector>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#endif

#include "vector_exp.h"

namespace {

inline float bf16_to_float(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int shift = 0;
      uint32_t m = mantissa;
      while (!(m & 0x400u)) { m <<= 1; ++shift; }
      bits = sign | ((113u - shift) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

struct Bf16 { using T = uint16_t; static float one(T v) { return bf16_to_float(v); } };
struct F16 { using T = uint16_t; static float one(T v) { return half_to_float(v); } };
struct Int8 { using T = int8_t; static float one(T v) { return static_cast<float>(v); } };

#if defined(__AVX512F__)
constexpr int64_t kWidth = 16;
using Vec = __m512;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(Vec v) { return _mm512_reduce_add_ps(v); }
inline Vec wload(const uint16_t* p, Bf16) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline Vec wload(const uint16_t* p, F16) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
inline Vec wload(const int8_t* p, Int8) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
constexpr int64_t kWidth = 8;
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(Vec v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  return _mm_cvtss_f32(h);
}
inline Vec wload(const uint16_t* p, Bf16) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
inline Vec wload(const uint16_t* p, F16) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
inline Vec wload(const int8_t* p, Int8) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}
#else
constexpr int64_t kWidth = 1;  // portable fallback: plain loops the compiler may vectorise
struct Vec { float v; };
inline Vec vzero() { return {0.0f}; }
inline Vec vload(const float* p) { return {*p}; }
inline void vstore(float* p, Vec v) { *p = v.v; }
inline Vec vfma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
inline float vsum(Vec v) { return v.v; }
template <class W>
inline Vec wload(const typename W::T* p, W) { return {W::one(*p)}; }
#endif

constexpr int64_t kDecodeRows = 4;  // up to this many rows, weights are streamed (without vdpbf16ps)
constexpr int64_t kTile = 4;        // prefill register tile: 4 rows of x by 4 rows of W

// One row of x against one weight row: four independent sums, so that the loads and conversions of the
// next block overlap the FMA latency of this one (one chain would leave memory bandwidth unused).
template <class W>
float dot_one(const float* x, int64_t k, const typename W::T* w) {
  Vec a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t i = 0;
  for (; i + 4 * kWidth <= k; i += 4 * kWidth) {
    a0 = vfma(vload(x + i), wload(w + i, W()), a0);
    a1 = vfma(vload(x + i + kWidth), wload(w + i + kWidth, W()), a1);
    a2 = vfma(vload(x + i + 2 * kWidth), wload(w + i + 2 * kWidth, W()), a2);
    a3 = vfma(vload(x + i + 3 * kWidth), wload(w + i + 3 * kWidth, W()), a3);
  }
  for (; i + kWidth <= k; i += kWidth) a0 = vfma(vload(x + i), wload(w + i, W()), a0);
  float sum = vsum(a0) + vsum(a1) + vsum(a2) + vsum(a3);
  for (; i < k; ++i) sum += x[i] * W::one(w[i]);
  return sum;
}

// Up to 4 rows of x against one weight row, read once.
template <class W>
void dot_rows(const float* x, int64_t rows, int64_t k, const typename W::T* w, float* out) {
  if (rows == 1) {
    out[0] = dot_one<W>(x, k, w);
    return;
  }
  Vec acc[kDecodeRows] = {vzero(), vzero(), vzero(), vzero()};
  int64_t i = 0;
  for (; i + kWidth <= k; i += kWidth) {
    const Vec wv = wload(w + i, W());
    for (int64_t r = 0; r < rows; ++r) acc[r] = vfma(vload(x + r * k + i), wv, acc[r]);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float sum = vsum(acc[r]);
    for (int64_t t = i; t < k; ++t) sum += x[r * k + t] * W::one(w[t]);
    out[r] = sum;
  }
}

template <class W>
void linear_streaming(const float* x, const typename W::T* w, const float* scale, float* y, int64_t rows,
                      int64_t n, int64_t k) {
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r0 = 0; r0 < rows; r0 += kDecodeRows) {
      const int64_t count = rows - r0 < kDecodeRows ? rows - r0 : kDecodeRows;
      float out[kDecodeRows];
      dot_rows<W>(x + r0 * k, count, k, w + j * k, out);
      for (int64_t r = 0; r < count; ++r) y[(r0 + r) * n + j] = scale ? out[r] * scale[j] : out[r];
    }
  }
}

// 4 rows of x (some may repeat the last real row) against 4 widened weight rows in `block`.
void tile_4x4(const float* const xr[kTile], const float* block, int64_t k, float out[kTile][kTile]) {
  Vec acc[kTile][kTile];
  for (auto& row : acc)
    for (auto& a : row) a = vzero();
  int64_t i = 0;
  for (; i + kWidth <= k; i += kWidth) {
    const Vec w0 = vload(block + i), w1 = vload(block + k + i), w2 = vload(block + 2 * k + i),
              w3 = vload(block + 3 * k + i);
    for (int r = 0; r < kTile; ++r) {
      const Vec xv = vload(xr[r] + i);
      acc[r][0] = vfma(xv, w0, acc[r][0]);
      acc[r][1] = vfma(xv, w1, acc[r][1]);
      acc[r][2] = vfma(xv, w2, acc[r][2]);
      acc[r][3] = vfma(xv, w3, acc[r][3]);
    }
  }
  for (int r = 0; r < kTile; ++r)
    for (int c = 0; c < kTile; ++c) {
      float sum = vsum(acc[r][c]);
      for (int64_t t = i; t < k; ++t) sum += xr[r][t] * block[c * k + t];
      out[r][c] = sum;
    }
}

template <class W>
void widen(const typename W::T* w, int64_t count, float* out) {
  int64_t i = 0;
  for (; i + kWidth <= count; i += kWidth) vstore(out + i, wload(w + i, W()));
  for (; i < count; ++i) out[i] = W::one(w[i]);
}

template <class W>
void linear_tiled(const float* x, const typename W::T* w, const float* scale, float* y, int64_t rows, int64_t n,
                  int64_t k) {
#pragma omp parallel
  {
    std::vector<float> block(kTile * k);
    const int64_t blocks = (n + kTile - 1) / kTile;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t j0 = b * kTile, cols = n - j0 < kTile ? n - j0 : kTile;
      widen<W>(w + j0 * k, cols * k, block.data());
      std::memset(block.data() + cols * k, 0, sizeof(float) * (kTile - cols) * k);
      for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
        const int64_t count = rows - r0 < kTile ? rows - r0 : kTile;
        const float* xr[kTile];
        for (int r = 0; r < kTile; ++r) xr[r] = x + (r0 + (r < count ? r : count - 1)) * k;
        float out[kTile][kTile];
        tile_4x4(xr, block.data(), k, out);
        for (int64_t r = 0; r < count; ++r)
          for (int64_t c = 0; c < cols; ++c)
            y[(r0 + r) * n + j0 + c] = scale ? out[r][c] * scale[j0 + c] : out[r][c];
      }
    }
  }
}

// Rows per block of a packed bfloat16 weight (pack_bf16_blocks in mfcore/kernels/cpu.py): the vdpbf16ps tile's
// weight rows (kDotW).
constexpr int64_t kPackedRows = 6;

// One projection of x among those a call computes (see BlockPlan).
struct Projection {
  const void* w;  // (n, k) bfloat16, or int8 (alone, scaled)
  int64_t n;
  float* y;       // (rows, n)
};

#if defined(__AVX512BF16__)
// bfloat16 or int8 weights, many rows, on CPUs with AVX512_BF16: the rows of x are rounded to bfloat16
// once and each vdpbf16ps multiplies 32 pairs straight from the stored bfloat16 weights (int8 ones are
// turned into bfloat16 4 rows at a time, exactly), summing in float32 (as llama.cpp's and transformers'
// bfloat16 matmuls round their inputs). 2.3x the widening path's flops on Zen 4.
// MFCORE_FLOAT32_ACTIVATIONS=1 keeps x in float32 (the widening path) where results must match float32 math.
inline __m512bh load32(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }

inline __m512 dot32(__m512 acc, const uint16_t* x, const uint16_t* w, __mmask32 mask) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(mask, x), (__m512bh)_mm512_maskz_loadu_epi16(mask, w));
}

// Rows of int8 weights as bfloat16: exact (|q| <= 127 needs 7 bits; bfloat16 has 8), 32 at a time.
void int8_as_bf16(const int8_t* w, int64_t count, uint16_t* out) {
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(w + i))));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(w + i + 16))));
    _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  for (; i < count; ++i) {
    const float value = static_cast<float>(w[i]);
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    out[i] = static_cast<uint16_t>(bits >> 16);  // exact for small integers
  }
}

constexpr int kDotW = 6;  // register tile of the vdpbf16ps path: 6 weight rows ...
constexpr int kDotX = 4;  // ... by up to 4 rows of x: 24 accumulators + 6 + 1 registers of the 32. Against
                          // 4 x 6 (the other way round): the same at 1 and 128 rows, 1.03-1.05x at 16 (4 even
                          // tiles, not 6 + 6 + 4), 1.16x at 4 (one tile, not 4 of a 6-row tile's registers);
                          // 3 x 8 0.88x, 2 x 12 spills. Both 1.8x the 4 x 4 float32-FMA tile at 128 rows.
static_assert(kDotW == kPackedRows, "a packed weight holds blocks of the tile's weight rows");

// One tile: `count` (<= kDotX, a compile-time bound so the accumulators stay in registers) rows of x
// against kDotW weight rows over the whole of k, summed into y. X = the number of x rows this instance
// holds; the caller picks the instance with X == count, so no row is computed twice. Weight rows
// next[first, last) are prefetched into L2 on the way, a cache line per row per step, next_step 32s apart (see
// linear_bf16_dot).
// Layouts (see linear_bf16_dot): kRows, x and weight rows as they are (row r is xr[r][0, k)); kInterleaved,
// the tile's x rows and the block's weight rows interleaved 32 values at a time (row r's i-th 32 at
// xr[0] + (i / 32 * X + r) * 32), so each step reads two runs of consecutive cache lines; kCopying, x
// interleaved and the weight rows as they are, written interleaved into `copy` on the way (a block's first
// tile: the later ones read the copy); kPacked, x rows as they are and a weight block stored interleaved
// (see pack_bf16_blocks in mfcore/kernels/cpu.py).
enum Layout { kRows, kCopying, kInterleaved, kPacked };
template <int X, Layout kLayout>
void dot_tile(const uint16_t* const xr[], const uint16_t* const wr[kDotW], int64_t k, int64_t full, __mmask32 tail,
              float out[kDotX][kDotW], const uint16_t* const next[kDotW], int first, int last, uint16_t* copy,
              int64_t next_step) {
  // in 32s per step: the rows taking turns
  constexpr int64_t kXStep = kLayout == kRows || kLayout == kPacked ? 1 : X,
                    kWStep = kLayout == kInterleaved || kLayout == kPacked ? kDotW : 1;
  __m512 acc[X][kDotW];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  for (int64_t i = 0; i < full; i += 32) {  // kDotW + X loads feed kDotW * X dot products
    __m512bh wv[kDotW];
    for (int c = 0; c < kDotW; ++c) wv[c] = load32(wr[c] + i * kWStep);
    if (kLayout == kCopying)
      for (int c = 0; c < kDotW; ++c) _mm512_storeu_si512(copy + i * kDotW + c * 32, (__m512i)wv[c]);
    for (int c = first; c < last; ++c) _mm_prefetch(reinterpret_cast<const char*>(next[c] + i * next_step), _MM_HINT_T1);
    for (int r = 0; r < X; ++r) {
      const __m512bh xv = load32(xr[r] + i * kXStep);
      for (int c = 0; c < kDotW; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv, wv[c]);
    }
  }
  if (tail)
    for (int r = 0; r < X; ++r)
      for (int c = 0; c < kDotW; ++c) acc[r][c] = dot32(acc[r][c], xr[r] + full, wr[c] + full, tail);
  for (int r = 0; r < X; ++r)
    for (int c = 0; c < kDotW; ++c) out[r][c] = _mm512_reduce_add_ps(acc[r][c]);
}

using DotTile = void (*)(const uint16_t* const[], const uint16_t* const[kDotW], int64_t, int64_t, __mmask32,
                         float[kDotX][kDotW], const uint16_t* const[kDotW], int, int, uint16_t*, int64_t);
template <Layout kLayout>
constexpr DotTile kTiles[kDotX + 1] = {nullptr, dot_tile<1, kLayout>, dot_tile<2, kLayout>, dot_tile<3, kLayout>,
                                       dot_tile<4, kLayout>};
constexpr const DotTile* kDotTiles[4] = {kTiles<kRows>, kTiles<kCopying>, kTiles<kInterleaved>, kTiles<kPacked>};

// From this many rows of x (a prompt chunk, not a decode batch) the x tiles and each weight block are laid
// out interleaved (see dot_tile). Rows k values apart sit 4 KB apart at k = 2048 (16 KB at 8192), so a
// step's 10 cache lines fell in one L1 set of 8 ways and evicted each other, as 10 separate streams for
// the hardware prefetcher. On Zen 4 one thread's tile over 32 x tiles went from 76% to 90% of the
// vdpbf16ps peak at k = 2048 (84% -> 89% at 8192), a packed prefill of 16 prompts 1.11-1.15x. The copy of
// each weight block pays off only with many tiles: at 8 and 16 rows (decode) it lost 0.93-0.97x.
constexpr int64_t kInterleaveRows = 32;
// Up to this many rows each thread rounds x to bfloat16 itself (see linear_bf16_dot).
constexpr int64_t kOwnCopyRows = 8;

// The projections one call computes from the same x, as blocks of kDotW weight rows: one projection
// (linear_bf16), several side by side (q, k and v: one parallel region and one rounding of x instead of
// three, and the narrow k and v no longer end on a half-idle core), or the MLP's gate and up projections
// paired, kDotW / 2 rows of each per block, written as silu(gate) * up (the activation in the tile's
// epilogue, not a pass of its own over two (rows, FFN) outputs).
struct BlockPlan {
  Projection parts[3];
  int count;
  bool swiglu;  // parts[0] gate, parts[1] up
  bool packed;  // each part's whole blocks of kDotW rows stored interleaved (not with swiglu)
  int64_t first[4];  // the first block of each part

  BlockPlan(std::initializer_list<Projection> list, bool gated, bool packed_blocks = false)
      : parts(), count(0), swiglu(gated), packed(packed_blocks && !gated), first() {
    for (const Projection& part : list) parts[count++] = part;
    const int64_t per_block = columns_per_block();
    for (int p = 0; p < (swiglu ? 1 : count); ++p) first[p + 1] = first[p] + (parts[p].n + per_block - 1) / per_block;
  }
  int64_t columns_per_block() const { return swiglu ? kDotW / 2 : kDotW; }
  int64_t blocks() const { return first[swiglu ? 1 : count]; }
  int part_of(int64_t b) const {
    int p = 0;
    while (!swiglu && b >= first[p + 1]) ++p;
    return p;
  }
  // The kDotW weight rows of block b (a part's last row repeated past its end) and where its sums go; true
  // where the block is stored interleaved (then wr[c] is where row c's first 32 values are).
  bool rows(int64_t b, int64_t k, const uint16_t* wr[kDotW], int* part, int64_t* j0, int64_t* cols) const {
    const int p = part_of(b);
    const int64_t per_block = columns_per_block(), n = parts[p].n;
    *part = p;
    *j0 = (b - first[p]) * per_block;
    *cols = std::min(per_block, n - *j0);
    const bool interleaved = packed && *cols == kDotW;  // a part's last, partial block keeps its rows
    for (int c = 0; c < kDotW; ++c) {
      const int64_t column = c % per_block, row = *j0 + (column < *cols ? column : *cols - 1);
      const Projection& from = parts[swiglu ? c / per_block : p];
      wr[c] = static_cast<const uint16_t*>(from.w) + (interleaved ? *j0 * k + c * 32 : row * k);
    }
    return interleaved;
  }
};

// y[r][c] = silu(gate) * up for a tile's sums (gate column c in out[r][c], up in out[r][kDotW / 2 + c]), with
// the activation kernel's vector exp (libm's scalar expf would cost ~10% of a prompt chunk's MLP).
void swiglu_tile(const float out[kDotX][kDotW], int64_t count, int64_t cols, float* y, int64_t n) {
  constexpr int kHalf = kDotW / 2, kSlots = (kDotX * kHalf + 7) / 8 * 8;
  alignas(32) float gate[kSlots] = {}, up[kSlots] = {}, result[kSlots];
  for (int64_t r = 0; r < count; ++r)
    for (int c = 0; c < kHalf; ++c) {
      gate[r * kHalf + c] = out[r][c];
      up[r * kHalf + c] = out[r][kHalf + c];
    }
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int i = 0; i < kSlots; i += 8) {
    const __m256 g = _mm256_load_ps(gate + i);
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    _mm256_store_ps(result + i, _mm256_mul_ps(silu, _mm256_load_ps(up + i)));
  }
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r * n + c] = result[r * kHalf + c];
}

// W is bfloat16 (used in place) or int8 (a block of kDotW rows turned into bfloat16 per step, then scaled).
template <class W>
void linear_bf16_dot(const float* x, const BlockPlan& plan, const float* scale, int64_t rows, int64_t k) {
  const int64_t blocks = plan.blocks(), full = k / 32 * 32;
  const __mmask32 tail = k > full ? static_cast<__mmask32>((1ull << (k - full)) - 1) : 0;
  constexpr bool kInt8 = sizeof(typename W::T) == 1;
  const bool interleaved = !kInt8 && rows >= kInterleaveRows && tail == 0;
  // A few decode rows: every thread rounds all of x into a buffer of its own, so no thread waits at a barrier
  // for the other's half (a passive thread wakes tens of microseconds late): 1.02-1.04x a layer at 1-8 rows.
  const bool own_copy = rows <= kOwnCopyRows;
  std::vector<uint16_t> shared_xb(own_copy ? 0 : rows * k);
#pragma omp parallel
  {
    std::vector<uint16_t> own_xb(own_copy ? rows * k : 0);
    uint16_t* const xb = own_copy ? own_xb.data() : shared_xb.data();
    // x rounded to bfloat16 (to nearest even), a row each when shared (one thread rounding it while the other
    // waited was ~2% of a prompt chunk in a profile, the most for the narrow k and v projections).
    auto round_row = [&](int64_t r) {
      const float* from = x + r * k;
      const int64_t r0 = r / kDotX * kDotX, in_tile = rows - r0 < kDotX ? rows - r0 : kDotX;
      uint16_t* to = interleaved ? xb + r0 * k + (r - r0) * 32 : xb + r * k;
      const int64_t stride = interleaved ? in_tile : 1;  // in 32s: the tile's rows take turns
      int64_t i = 0;
      for (; i + 32 <= k; i += 32) {
        const __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(from + i + 16), _mm512_loadu_ps(from + i));
        _mm512_storeu_si512(to + i * stride, (__m512i)pair);
      }
      for (; i < k; ++i) {
        uint32_t bits;
        std::memcpy(&bits, from + i, sizeof bits);
        to[i] = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
      }
    };
    if (own_copy) {
      for (int64_t r = 0; r < rows; ++r) round_row(r);
    } else {
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) round_row(r);
    }
    std::vector<uint16_t> block(kInt8 || interleaved ? kDotW * k : 0);
    // Weight blocks are handed out in runs as threads free up: on a shared 2-core machine a thread that was
    // preempted no longer holds the other at the barrier with a fixed half of the work (0-6% a layer).
    constexpr int64_t kRun = 16;
    const int64_t tiles = (rows + kDotX - 1) / kDotX;
#pragma omp for schedule(dynamic, kRun)
    for (int64_t b = 0; b < blocks; ++b) {
      const uint16_t* wr[kDotW];
      const uint16_t* next[kDotW];
      int part, next_part;
      int64_t j0, cols, next_j0, next_cols;
      const bool packed = plan.rows(b, k, wr, &part, &j0, &cols);
      // The next block, prefetched a line of each row per step; an interleaved one in the order it is read
      // (0.93-0.96x the rows layout at 2-8 rows, against 0.83-0.92x cut into kDotW runs of k).
      const int64_t next_step =
          plan.rows(b + 1 < blocks ? b + 1 : b, k, next, &next_part, &next_j0, &next_cols) ? kDotW : 1;
      if (kInt8) {  // one part: its rows j0.. as bfloat16
        int8_as_bf16(static_cast<const int8_t*>(plan.parts[0].w) + j0 * k, cols * k, block.data());
        for (int c = 0; c < kDotW; ++c) wr[c] = block.data() + (c < cols ? c : cols - 1) * k;
      }
      const int64_t n = plan.parts[part].n;
      float* const y = plan.parts[part].y;
      // This thread's next block is prefetched into L2 while this one computes, its rows shared out between
      // the tiles after the first (which reads this block from memory), or all taken by a lone tile (1-4
      // rows). With several tiles memory sat idle while the later ones computed: 1.1-1.3x a layer at 10-24
      // rows on Zen 4. With one tile the weights now stream at ~40 GB/s instead of ~30 (1.1-1.2x at 1-4 rows;
      // hint T0, into L1, was slower: 0.8-0.9x).
      // (One row on interleaved blocks: the hardware's own prefetch of the one stream was faster, 1.02x against
      // 0.95x.)
      const bool prefetch = !kInt8 && (b + 1) % kRun != 0 && b + 1 < blocks && !(plan.packed && rows == 1);
      // An interleaved block was itself prefetched, so its first tile prefetches too (at 8 rows 1.17-1.19x a
      // layer against leaving it all to the second tile).
      const bool first_reads_memory = tiles > 1 && !packed;
      const int64_t sharing = first_reads_memory ? tiles - 1 : tiles;  // the tiles that prefetch
      const int per_tile = prefetch ? static_cast<int>((kDotW + sharing - 1) / sharing) : 0;
      for (int64_t r0 = 0, t = 0; r0 < rows; r0 += kDotX, ++t) {
        const int64_t count = rows - r0 < kDotX ? rows - r0 : kDotX;
        const uint16_t* xr[kDotX];
        for (int64_t r = 0; r < count; ++r) xr[r] = interleaved ? xb + r0 * k + r * 32 : xb + (r0 + r) * k;
        float out[kDotX][kDotW];
        const int64_t share = first_reads_memory ? t - 1 : t;  // -1: that first tile prefetches nothing
        const int first = share < 0 ? kDotW : std::min<int>(kDotW, share * per_tile);
        // Interleaved: the first tile copies the block as it reads it (1.02-1.06x a prefill against copying it
        // in a loop of its own first), the others read the copy.
        const Layout layout = packed ? (interleaved ? kInterleaved : kPacked)
                                     : !interleaved ? kRows : t > 0 ? kInterleaved : kCopying;
        kDotTiles[layout][count](xr, wr, k, full, tail, out, next, first, std::min<int>(kDotW, first + per_tile),
                                 block.data(), next_step);
        if (layout == kCopying)
          for (int c = 0; c < kDotW; ++c) wr[c] = block.data() + c * 32;  // the later tiles read the copy
        if (plan.swiglu) {
          swiglu_tile(out, count, cols, y + r0 * n + j0, n);
          continue;
        }
        for (int64_t r = 0; r < count; ++r)
          for (int64_t c = 0; c < cols; ++c) y[(r0 + r) * n + j0 + c] = scale ? out[r][c] * scale[j0 + c] : out[r][c];
      }
    }
  }
}
#endif

bool float32_activations() {
  const char* value = std::getenv("MFCORE_FLOAT32_ACTIVATIONS");
  return value != nullptr && value[0] != '\0' && value[0] != '0';
}

bool is(const char* dtype, const char* name) { return std::strcmp(dtype, name) == 0; }
bool is_float32(const char* dtype) { return is(dtype, "float32") || is(dtype, "float"); }

int64_t leading_rows(int ndim, const int64_t* shape) {
  int64_t rows = 1;
  for (int d = 0; d < ndim - 1; ++d) rows *= shape[d];
  return rows;
}

// The float32 paths: up to kDecodeRows rows stream each weight row once, more run register tiles.
template <class W>
void linear_float32(const float* x, const typename W::T* w, const float* scale, float* y, int64_t rows, int64_t n,
                    int64_t k) {
  if (rows <= kDecodeRows)
    linear_streaming<W>(x, w, scale, y, rows, n, k);
  else
    linear_tiled<W>(x, w, scale, y, rows, n, k);
}

// A weight stored by pack_bf16_blocks (whole blocks of kPackedRows rows interleaved 32 values at a time), as rows:
// for the float32 paths, which read rows (the Python side packs only where vdpbf16ps exists).
std::vector<uint16_t> unpacked_bf16(const uint16_t* w, int64_t n, int64_t k) {
  std::vector<uint16_t> rows(w, w + n * k);
  for (int64_t j0 = 0; j0 + kPackedRows <= n; j0 += kPackedRows)
    for (int64_t i = 0; i < k; i += 32)
      for (int64_t c = 0; c < kPackedRows; ++c)
        std::memcpy(rows.data() + (j0 + c) * k + i, w + j0 * k + i * kPackedRows + c * 32, 32 * sizeof(uint16_t));
  return rows;
}

// A bfloat16 projection on the float32 paths, its weight stored as rows or (packed) by pack_bf16_blocks.
void linear_float32_bf16(const float* x, const uint16_t* w, bool packed, float* y, int64_t rows, int64_t n,
                         int64_t k) {
  if (!packed) {
    linear_float32<Bf16>(x, w, nullptr, y, rows, n, k);
    return;
  }
  const std::vector<uint16_t> rows_of_w = unpacked_bf16(w, n, k);
  linear_float32<Bf16>(x, rows_of_w.data(), nullptr, y, rows, n, k);
}

template <class W>
int linear_entry(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, const char* wtype,
                 bool scaled, bool packed = false) {
  const int out = scaled ? 3 : 2;
  if (nparam != out + 1 || ndims[1] != 2 || !is_float32(dtypes[0]) || !is(dtypes[1], wtype) ||
      !is_float32(dtypes[out]) || (scaled && (!is_float32(dtypes[2]) || ndims[2] != 1)))
    return 1;
  const int64_t k = shapes[0][ndims[0] - 1], n = shapes[1][0], rows = leading_rows(ndims[0], shapes[0]);
  if (shapes[1][1] != k || (scaled && shapes[2][0] != n) || (packed && k % 32 != 0)) return 2;
  const float* x = static_cast<const float*>(params[0]);
  const auto* w = static_cast<const typename W::T*>(params[1]);
  const float* scale = scaled ? static_cast<const float*>(params[2]) : nullptr;
  float* y = static_cast<float*>(params[out]);
#if defined(__AVX512BF16__)
  // Every row count takes vdpbf16ps (memory bound until ~6 rows, then the tile's flops), so a sequence's
  // numbers are the same alone or in a batch (one row streamed in float32 was no faster).
  if ((is(wtype, "bfloat16") || is(wtype, "int8")) && !float32_activations()) {
    linear_bf16_dot<W>(x, BlockPlan({{w, n, y}}, false, packed), scale, rows, k);
    return 0;
  }
#endif
  if (packed) {  // bfloat16 only, unscaled
    linear_float32_bf16(x, reinterpret_cast<const uint16_t*>(w), true, y, rows, n, k);
    return 0;
  }
  linear_float32<W>(x, w, scale, y, rows, n, k);
  return 0;
}

// Several bfloat16 projections of one x in one call (see BlockPlan): 2 or 3 weights then as many outputs, or
// (swiglu) the gate and up weights then one output silu(x . W1^T) * (x . W3^T).
int projections_entry(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool swiglu,
                      bool packed = false) {
  const int parts = swiglu ? 2 : (nparam - 1) / 2, outputs = swiglu ? 1 : parts;
  if (parts < 2 || parts > 3 || nparam != 1 + parts + outputs || !is_float32(dtypes[0])) return 1;
  const int64_t k = shapes[0][ndims[0] - 1], rows = leading_rows(ndims[0], shapes[0]);
  for (int p = 1; p <= parts; ++p)
    if (ndims[p] != 2 || !is(dtypes[p], "bfloat16") || shapes[p][1] != k) return 1;
  for (int o = 1 + parts; o < nparam; ++o)
    if (!is_float32(dtypes[o])) return 1;
  if ((swiglu && shapes[1][0] != shapes[2][0]) || (packed && (swiglu || k % 32 != 0))) return 2;
  const float* x = static_cast<const float*>(params[0]);
  Projection list[3];
  for (int p = 0; p < parts; ++p)
    list[p] = {params[1 + p], shapes[1 + p][0], static_cast<float*>(params[1 + parts + (swiglu ? 0 : p)])};
#if defined(__AVX512BF16__)
  if (!float32_activations()) {
    const BlockPlan plan = parts == 2 ? BlockPlan({list[0], list[1]}, swiglu, packed)
                                      : BlockPlan({list[0], list[1], list[2]}, false, packed);
    linear_bf16_dot<Bf16>(x, plan, nullptr, rows, k);
    return 0;
  }
#endif
  if (!swiglu) {
    for (int p = 0; p < parts; ++p)
      linear_float32_bf16(x, static_cast<const uint16_t*>(list[p].w), packed, list[p].y, rows, list[p].n, k);
    return 0;
  }
  const int64_t n = list[0].n;
  std::vector<float> up(rows * n);
  linear_float32_bf16(x, static_cast<const uint16_t*>(list[0].w), false, list[0].y, rows, n, k);
  linear_float32_bf16(x, static_cast<const uint16_t*>(list[1].w), false, up.data(), rows, n, k);
  for (int64_t i = 0; i < rows * n; ++i) list[0].y[i] = list[0].y[i] / (1.0f + std::exp(-list[0].y[i])) * up[i];
  return 0;
}

}  // namespace

// params: x (rows, K) float32, W (N, K) bfloat16 -> y (rows, N) float32
extern "C" int MfcoreLinearBf16(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return linear_entry<Bf16>(nparam, params, ndims, shapes, dtypes, "bfloat16", false);
}

// params: x (rows, K) float32, W0 (N0, K), W1 (N1, K)[, W2 (N2, K)] bfloat16 -> y0 (rows, N0), y1[, y2] float32
// (q, k and v; the MLP's gate and up)
extern "C" int MfcoreLinearsBf16(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return projections_entry(nparam, params, ndims, shapes, dtypes, false);
}

// The same two on weights stored by pack_bf16_blocks (mfcore/kernels/cpu.py), K a multiple of 32.
extern "C" int MfcoreLinearBf16Packed(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                      void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return linear_entry<Bf16>(nparam, params, ndims, shapes, dtypes, "bfloat16", false, true);
}

extern "C" int MfcoreLinearsBf16Packed(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                       void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return projections_entry(nparam, params, ndims, shapes, dtypes, false, true);
}

// packed = w (n, k) with each whole block of kPackedRows rows interleaved 32 values at a time (called through
// ctypes by pack_bf16_blocks in mfcore/kernels/cpu.py, which holds the same layout in numpy): the inverse of
// unpacked_bf16. k must be a multiple of 32.
extern "C" void MfcorePackBf16Blocks(const uint16_t* w, uint16_t* packed, int64_t n, int64_t k) {
  const int64_t whole = n / kPackedRows * kPackedRows;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < whole; j0 += kPackedRows)
    for (int64_t i = 0; i < k; i += 32)
      for (int64_t c = 0; c < kPackedRows; ++c)
        std::memcpy(packed + j0 * k + i * kPackedRows + c * 32, w + (j0 + c) * k + i, 32 * sizeof(uint16_t));
  std::memcpy(packed + whole * k, w + whole * k, (n - whole) * k * sizeof(uint16_t));
}

// 1 where bfloat16 linears take vdpbf16ps (this library was built for a CPU with AVX512_BF16), else 0: packed
// weights pay off only there (elsewhere each call unpacks them).
extern "C" int MfcoreHasBf16Dot() {
#if defined(__AVX512BF16__)
  return 1;
#else
  return 0;
#endif
}

// params: x (rows, K) float32, W1 (N, K), W3 (N, K) bfloat16 -> y = silu(x . W1^T) * (x . W3^T) (rows, N) float32
extern "C" int MfcoreSwigluBf16(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return projections_entry(nparam, params, ndims, shapes, dtypes, true);
}

// params: x (rows, K) float32, W (N, K) float16 -> y (rows, N) float32
extern "C" int MfcoreLinearF16(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return linear_entry<F16>(nparam, params, ndims, shapes, dtypes, "float16", false);
}

// params: x (rows, K) float32, Wq (N, K) int8, scale (N) float32 -> y (rows, N) float32
extern "C" int MfcoreLinearInt8(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return linear_entry<Int8>(nparam, params, ndims, shapes, dtypes, "int8", true);
}

// params: ids (...) int32 or int64, table (V, H) bfloat16 -> y (..., H) float32. An id outside the
// table fails the op (error 3) instead of reading past it.
extern "C" int MfcoreEmbedBf16(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[1] != 2 || !is(dtypes[1], "bfloat16") || !is_float32(dtypes[2])) return 1;
  const bool wide = is(dtypes[0], "int64");
  if (!wide && !is(dtypes[0], "int32")) return 1;
  int64_t count = 1;
  for (int d = 0; d < ndims[0]; ++d) count *= shapes[0][d];
  const int64_t vocab = shapes[1][0], h = shapes[1][1];
  const auto* table = static_cast<const uint16_t*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  for (int64_t t = 0; t < count; ++t) {
    const int64_t id = wide ? static_cast<const int64_t*>(params[0])[t] : static_cast<const int32_t*>(params[0])[t];
    if (id < 0 || id >= vocab) return 3;
    widen<Bf16>(table + id * h, h, y + t * h);
  }
  return 0;
}
