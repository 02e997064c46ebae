// exp of 8 floats at a time for the kernels' softmax and SiLU (Cephes' expf: 2^n times a degree-6
// polynomial on |r| <= ln2 / 2, within ~3e-7 relative of float64), inputs clamped to where the result is
// a finite, normal float. libm's scalar expf was ~40% of the MLP's activation pass over a 128-token chunk.
#ifndef MFCORE_VECTOR_EXP_H
#define MFCORE_VECTOR_EXP_H
#include <cmath>
#include <cstdint>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#if defined(__AVX2__) && defined(__FMA__)
static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // x - n ln2, ln2 in two parts (Cody-Waite)
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}
#endif

// values[i] = exp(values[i] - shift) for i < count; returns their sum.
static inline float exp_shifted_sum(float* values, int64_t count, float shift) {
  int64_t i = 0;
  float total = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 sum = _mm256_setzero_ps();
  const __m256 by = _mm256_set1_ps(shift);
  for (; i + 8 <= count; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(values + i), by));
    _mm256_storeu_ps(values + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  total = _mm_cvtss_f32(h);
#endif
  for (; i < count; ++i) total += (values[i] = std::exp(values[i] - shift));
  return total;
}
#endif  // MFCORE_VECTOR_EXP_H
