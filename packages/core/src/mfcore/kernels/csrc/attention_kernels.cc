// Forward-only float32 attention for prompts on CPU, called by MindSpore as an AOT Custom op (see
// mfcore/kernels/cpu.py). MindSpore 2.10's CPU BatchMatMul reaches ~11 GFLOP/s on attention shapes, and it
// computes every cache column, masked or not: a prompt chunk at the start of a 1024-slot cache pays for all
// 1024. This kernel skips the columns the additive bias masks (bias <= -1e8, mfcore's MASK_VALUE is -1e9),
// so the work follows what each query really sees, and uses the vector width of the machine.
//   MfcoreAttention  out = softmax(q . k^T + bias) . v
// params: q (B, G, R, S, D): queries grouped by kv head (G kv heads, R queries each), already scaled by
// 1/sqrt(D); k, v (B, G, T, D); bias (B or 1, 1, 1, S, T) additive -> out (B, G, R, S, D).
// A query that sees no column gets zeros (MindSpore's softmax would give a uniform mix; such rows are
// padding, never read).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "vector_exp.h"

namespace {

constexpr float kMasked = -1e8f;

inline float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float result = 0.0f;
#if defined(__AVX512F__)
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  result = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  result = _mm_cvtss_f32(h);
#endif
  for (; i < n; ++i) result += a[i] * b[i];
  return result;
}

inline void axpy_f32(float* y, float a, const float* x, int64_t n) {  // y += a * x
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(a);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * x[i];
}

bool is_float32(const char* t) {  // "float32" (MindSpore may also write "float")
  return t[0] == 'f' && t[1] == 'l' && t[2] == 'o' && t[3] == 'a' && t[4] == 't' && (t[5] == '\0' || t[5] == '3');
}

// One query row over the slots seen[0..count) (those its bias leaves visible): out = softmax(q . k_j +
// bias_j) . v; zeros when there are none. scores: scratch of `count` entries.
void attend_visible(const float* q, const float* k, const float* v, const float* bias, const int32_t* seen,
                    int64_t count, int64_t dim, float* scores, float* out) {
  for (int64_t d = 0; d < dim; ++d) out[d] = 0.0f;
  if (count == 0) return;
  float top = -INFINITY;
  for (int64_t c = 0; c < count; ++c) {
    const float s = dot_f32(q, k + seen[c] * dim, dim) + bias[seen[c]];
    scores[c] = s;
    top = s > top ? s : top;
  }
  const float inv = 1.0f / exp_shifted_sum(scores, count, top);
#if defined(__AVX512F__)
  if (dim % 64 == 0) {  // out summed in registers, 64 columns at a time, scaled once (Llama: D = 64 or 128)
    for (int64_t d = 0; d < dim; d += 64) {
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
      for (int64_t c = 0; c < count; ++c) {
        const float* row = v + seen[c] * dim + d;
        const __m512 p = _mm512_set1_ps(scores[c]);
        a0 = _mm512_fmadd_ps(p, _mm512_loadu_ps(row), a0);
        a1 = _mm512_fmadd_ps(p, _mm512_loadu_ps(row + 16), a1);
        a2 = _mm512_fmadd_ps(p, _mm512_loadu_ps(row + 32), a2);
        a3 = _mm512_fmadd_ps(p, _mm512_loadu_ps(row + 48), a3);
      }
      const __m512 scale = _mm512_set1_ps(inv);
      _mm512_storeu_ps(out + d, _mm512_mul_ps(a0, scale));
      _mm512_storeu_ps(out + d + 16, _mm512_mul_ps(a1, scale));
      _mm512_storeu_ps(out + d + 32, _mm512_mul_ps(a2, scale));
      _mm512_storeu_ps(out + d + 48, _mm512_mul_ps(a3, scale));
    }
    return;
  }
#endif
  for (int64_t c = 0; c < count; ++c) axpy_f32(out, scores[c] * inv, v + seen[c] * dim, dim);
}

// One query row over the slots j < keys whose bias is not masked. scores / seen: scratch of `keys` entries.
void attend_row(const float* q, const float* k, const float* v, const float* bias, int64_t keys, int64_t dim,
                float* scores, int32_t* seen, float* out) {
  int64_t count = 0;
  for (int64_t j = 0; j < keys; ++j)
    if (bias[j] > kMasked) seen[count++] = static_cast<int32_t>(j);
  attend_visible(q, k, v, bias, seen, count, dim, scores, out);
}

// The unmasked slots of every bias row, found once: all heads and query groups share a row (a scan 32 times
// fewer for Llama 3's 8 x 4 heads; in a server's packed prefill, scanning each 1024-slot row once per head
// was most of the attention's time). Row r's slots are index[start[r] .. start[r + 1]).
struct VisibleSlots {
  std::vector<int64_t> start;
  std::vector<int32_t> index;
  int64_t widest = 0;
};

VisibleSlots visible_slots(const float* bias, int64_t rows, int64_t keys) {
  VisibleSlots visible;
  visible.start.resize(rows + 1);
  for (int64_t r = 0; r < rows; ++r) {
    visible.start[r] = static_cast<int64_t>(visible.index.size());
    for (int64_t j = 0; j < keys; ++j)
      if (bias[r * keys + j] > kMasked) visible.index.push_back(static_cast<int32_t>(j));
    const int64_t count = static_cast<int64_t>(visible.index.size()) - visible.start[r];
    visible.widest = count > visible.widest ? count : visible.widest;
  }
  visible.start[rows] = static_cast<int64_t>(visible.index.size());
  return visible;
}

}  // namespace

extern "C" int MfcoreAttention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 5 || ndims[0] != 5 || ndims[1] != 4 || ndims[2] != 4 || ndims[3] != 5) return 1;
  for (int p = 0; p < nparam; ++p)
    if (!is_float32(dtypes[p])) return 1;
  const float* q = static_cast<const float*>(params[0]);
  const float* k = static_cast<const float*>(params[1]);
  const float* v = static_cast<const float*>(params[2]);
  const float* bias = static_cast<const float*>(params[3]);
  float* out = static_cast<float*>(params[4]);
  const int64_t batch = shapes[0][0], groups = shapes[0][1], reps = shapes[0][2], length = shapes[0][3],
                dim = shapes[0][4], keys = shapes[1][2];
  if (shapes[1][0] != batch || shapes[1][1] != groups || shapes[1][3] != dim || shapes[2][2] != keys ||
      shapes[3][3] != length || shapes[3][4] != keys || (shapes[3][0] != batch && shapes[3][0] != 1))
    return 2;
  const bool shared_bias = shapes[3][0] == 1;
  const VisibleSlots visible = visible_slots(bias, shapes[3][0] * length, keys);
  const int64_t rows = batch * groups * reps * length;
#pragma omp parallel
  {
    std::vector<float> scores(visible.widest);
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t i = row % length, b = row / (groups * reps * length), g = (row / (reps * length)) % groups;
      const int64_t r = (shared_bias ? 0 : b) * length + i;
      attend_visible(q + row * dim, k + (b * groups + g) * keys * dim, v + (b * groups + g) * keys * dim,
                     bias + r * keys, visible.index.data() + visible.start[r], visible.start[r + 1] - visible.start[r],
                     dim, scores.data(), out + row * dim);
    }
  }
  return 0;
}

// One decode step of one layer's attention, cache update included (decode_one's where / QK / softmax / PV,
// five MindSpore kernels whose broadcasts and transposed copies each left a cache-sized buffer per step:
// ~2 GB at 1.5B with a 1024-slot cache and four steps per call).
//   MfcoreDecodeAttention  k_out = k_cache with k at the slot, v_out likewise;
//                          out = softmax(q . k_out^T + bias) . v_out
// params: q (B, G, R, D) scaled; k, v (B, G, D); k_cache, v_cache (C, G, T, D), C >= B; bias (B, 1, 1, T);
// cache_slot (1 or B, 1, T, 1) bool (one True per row: the same slot for every row, or each row's own)
// -> out (B, G, R, D), k_out, v_out (C, G, T, D). Rows B.. of the cache are copied as they are: a server
// decodes its first B slots without slicing the cache apart and joining it again (~170 ms a step at 1.5B).
//   MfcoreDecodeAttentionInPlace  the same with k and v written into k_cache / v_cache themselves -> out only:
// no copy of the cache a step (~45 ms at 1.5B with 16 slots of 256). MindSpore hands a CPU graph its input
// tensors' own memory, so the caller's cache tensors are updated; the server checks that once at start
// (Engine._in_place_works) and keeps the copying kernel where it does not hold.
int decode_attention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool in_place) {
  if (nparam != (in_place ? 8 : 10) || ndims[0] != 4 || ndims[3] != 4 || ndims[5] != 4 || ndims[6] != 4) return 1;
  for (int p = 0; p < nparam; ++p)
    if (p != 6 && !is_float32(dtypes[p])) return 1;
  const float* q = static_cast<const float*>(params[0]);
  const float* k = static_cast<const float*>(params[1]);
  const float* v = static_cast<const float*>(params[2]);
  const float* k_cache = static_cast<const float*>(params[3]);
  const float* v_cache = static_cast<const float*>(params[4]);
  const float* bias = static_cast<const float*>(params[5]);
  const bool* slot = static_cast<const bool*>(params[6]);
  float* out = static_cast<float*>(params[7]);
  float* k_out = static_cast<float*>(in_place ? params[3] : params[8]);
  float* v_out = static_cast<float*>(in_place ? params[4] : params[9]);
  const int64_t batch = shapes[0][0], groups = shapes[0][1], reps = shapes[0][2], dim = shapes[0][3],
                keys = shapes[3][2];
  const int64_t cache_rows = shapes[3][0];
  if (cache_rows < batch || shapes[3][1] != groups || shapes[3][3] != dim || shapes[5][3] != keys ||
      shapes[6][2] != keys || (shapes[6][0] != 1 && shapes[6][0] != batch))
    return 2;
  const int64_t slot_rows = shapes[6][0];
  std::vector<int64_t> slot_of(batch, -1);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < keys; ++j)
      if (slot[(slot_rows == 1 ? 0 : b) * keys + j]) slot_of[b] = j;
  const int64_t heads = batch * groups;
#pragma omp parallel
  {
    std::vector<float> scores(keys);
    std::vector<int32_t> seen(keys);
    if (!in_place) {
#pragma omp for schedule(static) nowait
      for (int64_t h = heads * keys * dim; h < cache_rows * groups * keys * dim; h += keys * dim) {  // rows kept
        std::memcpy(k_out + h, k_cache + h, sizeof(float) * keys * dim);
        std::memcpy(v_out + h, v_cache + h, sizeof(float) * keys * dim);
      }
    }
#pragma omp for schedule(static)
    for (int64_t h = 0; h < heads; ++h) {  // one kv head of one row: (copy its cache,) write the slot, attend
      const int64_t b = h / groups;
      float* kh = k_out + h * keys * dim;
      float* vh = v_out + h * keys * dim;
      if (!in_place) {
        std::memcpy(kh, k_cache + h * keys * dim, sizeof(float) * keys * dim);
        std::memcpy(vh, v_cache + h * keys * dim, sizeof(float) * keys * dim);
      }
      const int64_t at = slot_of[b];
      if (at >= 0) {
        for (int64_t d = 0; d < dim; ++d) kh[at * dim + d] = k[h * dim + d];
        for (int64_t d = 0; d < dim; ++d) vh[at * dim + d] = v[h * dim + d];
      }
      const float* bb = bias + b * keys;
      for (int64_t r = 0; r < reps; ++r) {
        attend_row(q + (h * reps + r) * dim, kh, vh, bb, keys, dim, scores.data(), seen.data(),
                   out + (h * reps + r) * dim);
      }
    }
  }
  return 0;
}

extern "C" int MfcoreDecodeAttention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                     void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return decode_attention(nparam, params, ndims, shapes, dtypes, false);
}

extern "C" int MfcoreDecodeAttentionInPlace(int nparam, void** params, int* ndims, int64_t** shapes,
                                            const char** dtypes, void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return decode_attention(nparam, params, ndims, shapes, dtypes, true);
}

// A prompt, or a chunk of one, written into the cache and attended in one kernel (the graph's where /
// gather / concatenation over the cache left ~10 cache-sized buffers per layer in a compiled prompt graph:
// +5.4 GB at 8B with a 1024-slot cache).
//   MfcoreCacheAttention  k_out = k_cache with k_out[:, :, j] = k[:, :, index[j]] where index[j] < S (v alike);
//                         out = softmax(q . k_out[:, :, :Tb]^T + bias) . v_out[:, :, :Tb]
// params: q (B, G, R, S, D) scaled; k, v (B, G, S, D); k_cache, v_cache (B, G, T, D);
// bias (B or 1, 1, 1, S, Tb), Tb <= T: the leading cache slots the queries may see (a prompt: its own S,
// a chunk: the whole cache); index (T,) int32 -> out (B, G, R, S, D), k_out, v_out (B, G, T, D).
//   MfcoreCacheAttentionInPlace  the same writing k and v into k_cache and v_cache themselves -> out only (a
//                                server's packed prefill: no copy of every cache per chunk, ~4% of a prefill).
static int cache_attention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool in_place) {
  if (nparam != (in_place ? 8 : 10) || ndims[0] != 5 || ndims[1] != 4 || ndims[3] != 4 || ndims[5] != 5 ||
      ndims[6] != 1)
    return 1;
  for (int p = 0; p < nparam; ++p)
    if (p != 6 && !is_float32(dtypes[p])) return 1;
  const float* q = static_cast<const float*>(params[0]);
  const float* k = static_cast<const float*>(params[1]);
  const float* v = static_cast<const float*>(params[2]);
  const float* k_cache = static_cast<const float*>(params[3]);
  const float* v_cache = static_cast<const float*>(params[4]);
  const float* bias = static_cast<const float*>(params[5]);
  const int32_t* index = static_cast<const int32_t*>(params[6]);
  float* out = static_cast<float*>(params[7]);
  float* k_out = in_place ? static_cast<float*>(params[3]) : static_cast<float*>(params[8]);
  float* v_out = in_place ? static_cast<float*>(params[4]) : static_cast<float*>(params[9]);
  const int64_t batch = shapes[0][0], groups = shapes[0][1], reps = shapes[0][2], length = shapes[0][3],
                dim = shapes[0][4], keys = shapes[3][2], seen_keys = shapes[5][4];
  if (shapes[1][0] != batch || shapes[1][1] != groups || shapes[1][2] != length || shapes[1][3] != dim ||
      shapes[3][0] != batch || shapes[3][1] != groups || shapes[3][3] != dim || shapes[5][3] != length ||
      seen_keys > keys || (shapes[5][0] != batch && shapes[5][0] != 1) || shapes[6][0] != keys)
    return 2;
  const int64_t heads = batch * groups;
  // 1. the caches with the prompt's rows written at their slots (a copy, or the given ones)
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t j = 0; j < keys; ++j) {
      const int32_t t = index[j];
      const bool write = t >= 0 && t < length;
      if (in_place && !write) continue;
      const float* ks = write ? k + (h * length + t) * dim : k_cache + (h * keys + j) * dim;
      const float* vs = write ? v + (h * length + t) * dim : v_cache + (h * keys + j) * dim;
      float* kd = k_out + (h * keys + j) * dim;
      float* vd = v_out + (h * keys + j) * dim;
      for (int64_t d = 0; d < dim; ++d) kd[d] = ks[d];
      for (int64_t d = 0; d < dim; ++d) vd[d] = vs[d];
    }
  }
  // 2. attention of every query over the slots its bias leaves visible
  const bool shared_bias = shapes[5][0] == 1;
  const VisibleSlots visible = visible_slots(bias, shapes[5][0] * length, seen_keys);
  const int64_t rows = heads * reps * length;
#pragma omp parallel
  {
    std::vector<float> scores(visible.widest);
#pragma omp for schedule(dynamic, 8)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t i = row % length, h = row / (reps * length), b = h / groups;
      const int64_t r = (shared_bias ? 0 : b) * length + i;
      attend_visible(q + row * dim, k_out + h * keys * dim, v_out + h * keys * dim, bias + r * seen_keys,
                     visible.index.data() + visible.start[r], visible.start[r + 1] - visible.start[r], dim,
                     scores.data(), out + row * dim);
    }
  }
  return 0;
}

extern "C" int MfcoreCacheAttention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                    void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return cache_attention(nparam, params, ndims, shapes, dtypes, false);
}

// params: q, k, v, k_cache, v_cache, bias, index as above -> out; k_cache and v_cache are written.
extern "C" int MfcoreCacheAttentionInPlace(int nparam, void** params, int* ndims, int64_t** shapes,
                                           const char** dtypes, void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return cache_attention(nparam, params, ndims, shapes, dtypes, true);
}

// Prompts prefilled packed into one row, copied into their slots of a server's cache (MindSpore's gather,
// transpose, slice and select for this took ~1 s per prefill at 1.5B with 16 slots).
//   MfcoreCacheInsert  out = cache, except out[b, g, j] = packed[0, g, columns[b, j]] for every row b with rows[b]
// params: packed (1, G, P, D) float32; cache (B, G, T, D) float32; columns (B, T) int32, each < P;
// rows (B,) bool -> out (B, G, T, D).
//   MfcoreCacheInsertInPlace  the same rows written into `cache` itself -> out (B,) bool, a copy of rows (a
// graph needs an output): no new cache per prefill (copying and page-faulting all 32 caches of 16 slots,
// 256 MB at 1.5B, was ~4% of a 16-prompt prefill and more of a lone prompt's).
static int cache_insert(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool in_place) {
  if (nparam != 5 || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 2 || ndims[3] != 1 || !is_float32(dtypes[0]) ||
      !is_float32(dtypes[1]) || (!in_place && !is_float32(dtypes[4])) || (in_place && ndims[4] != 1))
    return 1;
  const int64_t packed_columns = shapes[0][2], batch = shapes[1][0], groups = shapes[1][1], keys = shapes[1][2],
                dim = shapes[1][3];
  if (shapes[0][0] != 1 || shapes[0][1] != groups || shapes[0][3] != dim || shapes[2][0] != batch ||
      shapes[2][1] != keys || shapes[3][0] != batch || (in_place && shapes[4][0] != batch))
    return 2;
  const float* packed = static_cast<const float*>(params[0]);
  const float* cache = static_cast<const float*>(params[1]);
  const int32_t* columns = static_cast<const int32_t*>(params[2]);
  const bool* rows = static_cast<const bool*>(params[3]);
  float* out = in_place ? static_cast<float*>(params[1]) : static_cast<float*>(params[4]);
  for (int64_t x = 0; x < batch * keys; ++x)
    if (rows[x / keys] && (columns[x] < 0 || columns[x] >= packed_columns)) return 3;
  if (in_place) std::memcpy(params[4], rows, sizeof(bool) * batch);
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < batch * groups; ++h) {  // one kv head of one slot
    const int64_t b = h / groups, g = h % groups;
    float* dst = out + h * keys * dim;
    if (!rows[b]) {
      if (!in_place) std::memcpy(dst, cache + h * keys * dim, sizeof(float) * keys * dim);
      continue;
    }
    for (int64_t j = 0; j < keys; ++j)
      std::memcpy(dst + j * dim, packed + (g * packed_columns + columns[b * keys + j]) * dim, sizeof(float) * dim);
  }
  return 0;
}

extern "C" int MfcoreCacheInsert(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return cache_insert(nparam, params, ndims, shapes, dtypes, false);
}

// params: packed, cache, columns, rows as above -> rows (B,) bool; `cache` is written.
extern "C" int MfcoreCacheInsertInPlace(int nparam, void** params, int* ndims, int64_t** shapes,
                                        const char** dtypes, void* stream, void* extra) {
  (void)stream;
  (void)extra;
  return cache_insert(nparam, params, ndims, shapes, dtypes, true);
}
