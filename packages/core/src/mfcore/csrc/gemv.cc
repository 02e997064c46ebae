// y (rows, N) = x (rows, K) . W (N, K)^T in float32, row-major: the decode step's projections, where
// rows (batch) is small and the cost is reading W once. Called by MindSpore as an AOT Custom op
// (see mfcore/cpu_gemv.py); the signature is MindSpore's AOT kernel interface.
#include <cstdint>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

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

extern "C" int MfcoreGemv(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                          void* stream, void* extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[1] != 2) return 1;
  for (int p = 0; p < 3; ++p) {
    const char* t = dtypes[p];  // "float32" (MindSpore may also write "float")
    if (!(t[0] == 'f' && t[1] == 'l' && t[2] == 'o' && t[3] == 'a' && t[4] == 't' && (t[5] == '\0' || t[5] == '3'))) return 2;
  }
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t k = shapes[0][ndims[0] - 1];
  const int64_t n = shapes[1][0];
  if (shapes[1][1] != k) return 3;
  int64_t rows = 1;
  for (int d = 0; d < ndims[0] - 1; ++d) rows *= shapes[0][d];
  // Weight row outermost: each row of W is read from memory once and reused for every row of x.
  for (int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    for (int64_t r = 0; r < rows; ++r) y[r * n + j] = dot(x + r * k, wj, k);
  }
  return 0;
}
