// Forward-only float32 kernels for one decode step on CPU, called by MindSpore as AOT Custom ops (see
// mfcore/cpu_kernels.py; the signature of each entry point is MindSpore's AOT kernel interface). Each
// replaces several small MindSpore kernels whose launches cost more than their arithmetic at one row:
//   MfcoreGemv     y = x . W^T                          (a projection; W (N, K) read once)
//   MfcoreRmsNorm  y = w * x / sqrt(mean(x^2) + eps)    (5 kernels in MindSpore)
//   MfcoreSwiglu   y = silu(x . W1^T) * (x . W3^T)      (the MLP's gate and up projections: 5 kernels)
//   MfcoreSiluMul  y = silu(gate) * up                   (the MLP's activation on its projections: 3 kernels)
// All tensors are row-major; x is (rows, K) with rows the batch.
#include <cmath>
#include <cstdint>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "vector_exp.h"

static inline float dot(const float* a, const float* b, int64_t k) {
  int64_t i = 0;
  float result = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  // Four independent accumulators hide the FMA latency; W streams through once.
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  for (; i + 32 <= k; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  for (; i + 8 <= k; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  result = _mm_cvtss_f32(h);
#endif
  for (; i < k; ++i) result += a[i] * b[i];
  return result;
}

static bool all_float32(int nparam, const char** dtypes) {
  for (int p = 0; p < nparam; ++p) {
    const char* t = dtypes[p];  // "float32" (MindSpore may also write "float")
    if (!(t[0] == 'f' && t[1] == 'l' && t[2] == 'o' && t[3] == 'a' && t[4] == 't' && (t[5] == '\0' || t[5] == '3')))
      return false;
  }
  return true;
}

static int64_t leading_rows(int ndim, const int64_t* shape) {
  int64_t rows = 1;
  for (int d = 0; d < ndim - 1; ++d) rows *= shape[d];
  return rows;
}

// params: x (rows, K), W (N, K) -> y (rows, N)
extern "C" int MfcoreGemv(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                          void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[1] != 2 || !all_float32(nparam, dtypes)) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t k = shapes[0][ndims[0] - 1], n = shapes[1][0], rows = leading_rows(ndims[0], shapes[0]);
  if (shapes[1][1] != k) return 2;
  // Weight row outermost: each row of W is read from memory once and reused for every row of x.
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    for (int64_t r = 0; r < rows; ++r) y[r * n + j] = dot(x + r * k, wj, k);
  }
  return 0;
}

// params: x (rows, H), weight (H), eps (1) -> y (rows, H); as Hugging Face's LlamaRMSNorm in float32.
extern "C" int MfcoreRmsNorm(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                             void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 4 || ndims[1] != 1 || !all_float32(nparam, dtypes)) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float eps = *static_cast<const float*>(params[2]);
  float* y = static_cast<float*>(params[3]);
  const int64_t h = shapes[0][ndims[0] - 1], rows = leading_rows(ndims[0], shapes[0]);
  if (shapes[1][0] != h) return 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * h;
    const float mean = dot(xr, xr, h) / static_cast<float>(h);
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < h; ++i) y[r * h + i] = w[i] * (xr[i] * scale);
  }
  return 0;
}

// params: x (rows, K), W1 (N, K), W3 (N, K) -> y (rows, N) = silu(x . W1^T) * (x . W3^T)
extern "C" int MfcoreSwiglu(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                            void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 4 || ndims[1] != 2 || ndims[2] != 2 || !all_float32(nparam, dtypes)) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* w1 = static_cast<const float*>(params[1]);
  const float* w3 = static_cast<const float*>(params[2]);
  float* y = static_cast<float*>(params[3]);
  const int64_t k = shapes[0][ndims[0] - 1], n = shapes[1][0], rows = leading_rows(ndims[0], shapes[0]);
  if (shapes[1][1] != k || shapes[2][0] != n || shapes[2][1] != k) return 2;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0; r < rows; ++r) {
      const float gate = dot(x + r * k, w1 + j * k, k);
      const float up = dot(x + r * k, w3 + j * k, k);
      y[r * n + j] = gate / (1.0f + std::exp(-gate)) * up;
    }
  }
  return 0;
}

// params: gate (..., N), up (..., N) -> y = silu(gate) * up, float32 (the MLP's activation: sigmoid and two
// multiplies in MindSpore, each a pass over a (tokens, FFN) tensor).
extern "C" int MfcoreSiluMul(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                             void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[0] != ndims[1] || !all_float32(nparam, dtypes)) return 1;
  int64_t count = 1;
  for (int d = 0; d < ndims[0]; ++d) {
    if (shapes[0][d] != shapes[1][d]) return 2;
    count *= shapes[0][d];
  }
  const float* gate = static_cast<const float*>(params[0]);
  const float* up = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t per_thread_block = 4096;  // elements: whole vectors, and enough work per OpenMP chunk
#pragma omp parallel for schedule(static)
  for (int64_t start = 0; start < count; start += per_thread_block) {
    const int64_t end = count - start < per_thread_block ? count : start + per_thread_block;
    int64_t i = start;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= end; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i);
      const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
      _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < end; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
  return 0;
}
