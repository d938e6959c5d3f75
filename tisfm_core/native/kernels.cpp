// tiSFM's element-wise CPU kernels, written once for any vector width: GCC/Clang vector
// extensions map each operation on `vf` to one AVX-512, AVX2 or SSE/NEON instruction, chosen by
// the flags tisfm_core.native compiles with (torch's CPU capability). Rows (or sequence-head
// pairs) are split over `threads` OpenMP threads: torch's own runtime, already loaded, so its
// waiting threads take the work. All arrays are fp32 and contiguous.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

// TISFM_WIDTH (set by TISFM_VECTOR_WIDTH) forces a width: 16 lanes built for AVX2 run the
// AVX-512 build's loop logic (blocks, tails, padding) on a CPU without AVX-512. Intrinsics are used
// only where the width matches the instruction set; elsewhere the generic forms.
#if defined(TISFM_WIDTH)
#define TISFM_W TISFM_WIDTH
#elif defined(__AVX512F__)
#define TISFM_W 16
#elif defined(__AVX__)
#define TISFM_W 8
#else
#define TISFM_W 4
#endif
#if defined(__AVX512F__) && TISFM_W == 16
#define TISFM_AVX512 1
#elif defined(__AVX__) && TISFM_W == 8
#define TISFM_AVX 1
#endif
#if defined(TISFM_AVX512) || defined(TISFM_AVX)
#include <immintrin.h>
#endif

constexpr int W = TISFM_W;
typedef float vf __attribute__((vector_size(4 * W)));
typedef uint32_t vu __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

// A broadcast by intrinsic: `vf{} + x` would add 0 to x first (for the sign of zero) and then
// shuffle, 2 ALU operations where a broadcast load is none.
static inline vf splat(float x) {
#if defined(TISFM_AVX512)
    return (vf)_mm512_set1_ps(x);
#elif defined(TISFM_AVX)
    return (vf)_mm256_set1_ps(x);
#else
    return vf{} + x;
#endif
}
static inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
static inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// A store that bypasses the caches (p aligned to a vector), for data read back much later: no
// read of the line first. Fenced by fence_streams() before the data is read.
static inline void stream(float* p, vf v) {
#if defined(TISFM_AVX512)
    _mm512_stream_ps(p, (__m512)v);
#elif defined(TISFM_AVX)
    _mm256_stream_ps(p, (__m256)v);
#else
    store(p, v);
#endif
}
static inline void fence_streams() {
#if defined(TISFM_AVX512) || defined(TISFM_AVX)
    _mm_sfence();
#endif
}
// One instruction each (the generic forms compile to a compare and a blend); like `a > b ? a : b`
// they return b where either is NaN.
static inline vf vmax(vf a, vf b) {
#if defined(TISFM_AVX512)
    return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(TISFM_AVX)
    return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#else
    return a > b ? a : b;
#endif
}
static inline vf vmin(vf a, vf b) {
#if defined(TISFM_AVX512)
    return (vf)_mm512_min_ps((__m512)a, (__m512)b);
#elif defined(TISFM_AVX)
    return (vf)_mm256_min_ps((__m256)a, (__m256)b);
#else
    return a < b ? a : b;
#endif
}
static inline float hsum(vf v) { float s = 0; for (int i = 0; i < W; ++i) s += v[i]; return s; }
static inline float hmax(vf v) { float m = v[0]; for (int i = 1; i < W; ++i) m = std::max(m, v[i]); return m; }
static inline int64_t padded(int64_t n) { return (n + W - 1) / W * W; }

// exp(x) for x <= 88, with exp(-87) = 1.6e-38 standing for anything smaller: Cody-Waite
// reduction to |r| <= ln2 / 2, a degree-5 polynomial fitted for relative error (1.6e-7 at most in
// fp32, 1.4 ulp) and 2^n written into the exponent bits. About a third of the instructions of a
// general-purpose vector exp. `upper` = false skips the upper clamp for arguments known < 88.
// In place on N vectors, one step for all of them before the next: the N dependency chains then
// reach the core interleaved, where one chain after another would fill its scheduler with
// instructions that wait (element-wise code ran at about one instruction per cycle).
template <int N, bool upper = true>
static inline void vexp_n(vf* x) {
    const vf magic = splat(12582912.0f);                 // 1.5 * 2^23: adding it rounds to integer
    vf t[N], r[N], q[N];
    for (int u = 0; u < N; ++u) {
        x[u] = vmax(x[u], splat(-87.0f));
        if (upper) x[u] = vmin(x[u], splat(88.0f));
    }
    for (int u = 0; u < N; ++u) t[u] = x[u] * splat(1.44269504088896341f) + magic;
    for (int u = 0; u < N; ++u) r[u] = x[u] - (t[u] - magic) * splat(0.693359375f);
    for (int u = 0; u < N; ++u) r[u] = r[u] - (t[u] - magic) * splat(-2.12194440e-4f);
    for (int u = 0; u < N; ++u) q[u] = splat(0.00831273291260004f) * r[u] + splat(0.04189048334956169f);
    for (int u = 0; u < N; ++u) q[u] = q[u] * r[u] + splat(0.16667112708091736f);
    for (int u = 0; u < N; ++u) q[u] = q[u] * r[u] + splat(0.4999922811985016f);
    for (int u = 0; u < N; ++u) q[u] = q[u] * (r[u] * r[u]) + r[u] + splat(1.0f);
    for (int u = 0; u < N; ++u) {
        vu bits;
        std::memcpy(&bits, &t[u], sizeof bits);          // low bits of t hold n
        bits = (bits + 127u) << 23;
        vf scale;
        std::memcpy(&scale, &bits, sizeof scale);
        x[u] = q[u] * scale;
    }
}
template <bool upper = true>
static inline vf vexp(vf x) { vexp_n<1, upper>(&x); return x; }

// 1 / x for x >= 1: the hardware estimate and one Newton step (relative error about 1e-7), where
// a division would occupy the divider for a dozen cycles per vector.
template <int N>
static inline void vrecip_n(vf* x) {
#if defined(TISFM_AVX512) || defined(TISFM_AVX)
    vf r[N];
#if defined(TISFM_AVX512)
    for (int u = 0; u < N; ++u) r[u] = (vf)_mm512_rcp14_ps((__m512)x[u]);
#else
    for (int u = 0; u < N; ++u) r[u] = (vf)_mm256_rcp_ps((__m256)x[u]);
#endif
    for (int u = 0; u < N; ++u) x[u] = r[u] * (splat(2.0f) - x[u] * r[u]);
#else
    for (int u = 0; u < N; ++u) x[u] = splat(1.0f) / x[u];   // the baseline build has no estimate instruction
#endif
}
static inline vf vrecip(vf x) { vrecip_n<1>(&x); return x; }

template <int N>
static inline void vsigmoid_n(vf* z) {
    for (int u = 0; u < N; ++u) z[u] = -z[u];
    vexp_n<N>(z);
    for (int u = 0; u < N; ++u) z[u] = splat(1.0f) + z[u];
    vrecip_n<N>(z);
}

// body(j, V) over 0 .. n - 1 (n a multiple of W) in blocks of V = 2 vectors and, where n / W is
// odd, one last block of V = 1 (a std::integral_constant): code written for V vectors at a time
// gives the core 2 V independent chains (see vexp_n).
template <class Body>
static inline void in_pairs(int64_t n, Body body) {
    int64_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) body(j, std::integral_constant<int, 2>{});
    if (j < n) body(j, std::integral_constant<int, 1>{});
}

// Lanes 0 .. n-1 of a vector at p (n < W: the rest zero), without reading past p + n.
static inline vf load_part(const float* p, int64_t n) {
    float tmp[W] = {0};
    std::memcpy(tmp, p, n * sizeof(float));
    return load(tmp);
}
static inline void store_part(float* p, vf v, int64_t n) {
    float tmp[W];
    store(tmp, v);
    std::memcpy(p, tmp, n * sizeof(float));
}
// Row x[0 .. n-1] into buf[0 .. padded(n)-1], the padding set to `fill`.
static inline void copy_padded(float* buf, const float* x, int64_t n, float fill) {
    std::memcpy(buf, x, n * sizeof(float));
    std::fill(buf + n, buf + padded(n), fill);
}
static inline vf tail_mask(int64_t n) {   // 1 in the lanes of the last block that hold data
    vf m = splat(0.0f);
    int64_t k = n % W == 0 ? W : n % W;
    for (int64_t i = 0; i < k; ++i) m[i] = 1.0f;
    return m;
}


// Softmax pooling of rows (motif m, sequence i), m < motifs, i < per_motif, of both strands'
// scores: row m, i of strand t starts at st + m * s_m + i * s_i, p positions with unit stride.
// v = sigmoid(s * scale + bias), weights e = exp(a v - shift) over the 2 p positions of a row, the
// pooled value sum(e v) / sum(e); sc0, sc1, b0, b1 (per strand) and a are indexed by motif; shift
// is the row maximum of a v if row_max, else max(a, 0). Per-row outputs are indexed by
// r = m * per_motif + i. Without `f0` (inference) only y = sum(e v) / sum(e) is written, to z.
// With it (training) the outputs of tisfm_core.fused._pool_rows_train: z, evs, evar and the sums
// per row, and the derivatives f0, f1, whose rows start at ft + m * f_m + i * f_i and have room
// for f_room floats: with room for pp, aligned rows are written whole by streaming stores (the
// derivatives are read in the backward pass, after the rest of the model: written through the
// caches, each line would be read from memory first).
// The row loop is shared by two entry points that differ in where the scores come from: given
// (tisfm_pool_rows) or computed here from the input (tisfm_conv_pool_rows).
template <class Fill>
static void pool_rows(Fill fill, bool seq_major, int64_t extra, int64_t motifs, int64_t per_motif,
                      int64_t p, const float* sc0, const float* sc1, const float* b0,
                      const float* b1, const float* a, int row_max, float* z, float* evs,
                      float* evar, float* f0_sum, float* f1_sum, float* fs0_sum, float* fs1_sum,
                      float* f0, float* f1, int64_t f_m, int64_t f_i, int64_t f_room, int threads) {
    const int64_t rows = motifs * per_motif;
    const int64_t pp = padded(p);
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> buf(6 * pp + extra);
        float *x0 = buf.data(), *x1 = x0 + pp, *v0 = x1 + pp, *v1 = v0 + pp, *e0 = v1 + pp, *e1 = e0 + pp;
        float* scratch = e1 + pp;   // the fill's own (extra floats)
        const vf last = tail_mask(p), one = splat(1.0f);
        Fill fill_rows = fill;   // per thread: a fill may keep state (the sequence it holds)
#pragma omp for schedule(static)
        for (int64_t q = 0; q < rows; ++q) {
            // sequence-major order keeps one sequence's input in cache across its motifs
            const int64_t m = seq_major ? q % motifs : q / per_motif;
            const int64_t i = seq_major ? q / motifs : q % per_motif;
            const int64_t r = m * per_motif + i;
            fill_rows(m, i, x0, x1, scratch);   // both strands' scores of the row, padded to pp
            const vf c0 = splat(sc0[m]), c1 = splat(sc1[m]), d0 = splat(b0[m]), d1 = splat(b1[m]);
            const float am = a[m];
            const vf av = splat(am);
            vf shift = splat(std::max(am, 0.0f)), zs = splat(0), es = splat(0);
            // V vectors of both strands from position j at a time (2 V dependency chains); the
            // vector at pp - W holds the row's end, masked by `last`. Two passes, activations
            // then weights, even where the shift is known: shorter loops overlap better (1.15x).
            vf top = splat(-FLT_MAX);   // the row maximum of a v (row_max)
            in_pairs(pp, [&](int64_t j, auto vectors) {
                constexpr int V = decltype(vectors)::value;
                vf u[2 * V];
                for (int k = 0; k < V; ++k) {
                    u[k] = load(x0 + j + k * W) * c0 + d0;
                    u[V + k] = load(x1 + j + k * W) * c1 + d1;
                }
                vsigmoid_n<2 * V>(u);
                for (int k = 0; k < V; ++k) {
                    store(v0 + j + k * W, u[k]);
                    store(v1 + j + k * W, u[V + k]);
                    if (!row_max) continue;
                    const vf t = vmax(u[k] * av, u[V + k] * av);
                    top = vmax(top, j + (k + 1) * W < pp ? t : (last > 0 ? t : splat(-FLT_MAX)));
                }
            });
            if (row_max) shift = splat(hmax(top));
            // softmax weights of the activations (arguments a v - shift <= 0), and the sums
            in_pairs(pp, [&](int64_t j, auto vectors) {
                constexpr int V = decltype(vectors)::value;
                vf u[2 * V], e[2 * V];
                for (int k = 0; k < V; ++k) {
                    u[k] = load(v0 + j + k * W);
                    u[V + k] = load(v1 + j + k * W);
                }
                for (int k = 0; k < 2 * V; ++k) e[k] = u[k] * av - shift;
                vexp_n<2 * V, false>(e);
                if (j + V * W >= pp) { e[V - 1] *= last; e[2 * V - 1] *= last; }
                for (int k = 0; k < V; ++k) {
                    store(e0 + j + k * W, e[k]);
                    store(e1 + j + k * W, e[V + k]);
                }
                for (int k = 0; k < 2 * V; ++k) {
                    zs += e[k];
                    es += e[k] * u[k];
                }
            });
            const float zr = hsum(zs), er = hsum(es);
            if (!f0) {   // inference: the pooled value only
                z[r] = er / zr;
                continue;
            }
            z[r] = zr;
            evs[r] = er;
            const float iz = 1.0f / zr;
            const vf c = splat((1.0f - am * er * iz) * iz), q = splat(am * iz), y = splat(er * iz);
            vf g0 = splat(0), g1 = splat(0), h0 = splat(0), h1 = splat(0), var0 = splat(0), var1 = splat(0);
            float *y0 = f0 + m * f_m + i * f_i, *y1 = f1 + m * f_m + i * f_i;
            const bool whole = f_room >= pp && (uintptr_t)y0 % sizeof(vf) == 0 &&
                               (uintptr_t)y1 % sizeof(vf) == 0;
            for (int64_t j = 0; j < pp; j += W) {
                vf u0 = load(v0 + j), u1 = load(v1 + j), w0 = load(e0 + j), w1 = load(e1 + j);
                vf f_0 = w0 * u0 * (one - u0) * (c + q * u0);
                vf f_1 = w1 * u1 * (one - u1) * (c + q * u1);
                vf d0 = u0 - y, d1 = u1 - y;
                var0 += w0 * d0 * d0;   // one accumulator per strand: shorter loop-carried chains
                var1 += w1 * d1 * d1;
                g0 += f_0;
                g1 += f_1;
                h0 += f_0 * load(x0 + j);
                h1 += f_1 * load(x1 + j);
                if (whole) {
                    stream(y0 + j, f_0);
                    stream(y1 + j, f_1);
                } else if (j + W < pp) {
                    store(y0 + j, f_0);
                    store(y1 + j, f_1);
                } else {
                    store_part(y0 + j, f_0, p - j);
                    store_part(y1 + j, f_1, p - j);
                }
            }
            f0_sum[r] = hsum(g0);
            f1_sum[r] = hsum(g1);
            fs0_sum[r] = hsum(h0);
            fs1_sum[r] = hsum(h1);
            evar[r] = hsum(var0 + var1);
        }
        fence_streams();
    }
}


extern "C" {

int tisfm_vector_width() { return W; }

void tisfm_pool_rows(const float* s0, const float* s1, int64_t motifs, int64_t per_motif,
                     int64_t p, int64_t s_m, int64_t s_i, const float* sc0, const float* sc1,
                     const float* b0, const float* b1, const float* a, int row_max, float* z,
                     float* evs, float* evar, float* f0_sum, float* f1_sum, float* fs0_sum,
                     float* fs1_sum, float* f0, float* f1, int64_t f_m, int64_t f_i, int threads) {
    auto fill = [=](int64_t m, int64_t i, float* x0, float* x1, float*) {
        copy_padded(x0, s0 + m * s_m + i * s_i, p, 0.0f);
        copy_padded(x1, s1 + m * s_m + i * s_i, p, 0.0f);
    };
    pool_rows(fill, false, 0, motifs, per_motif, p, sc0, sc1, b0, b1, a, row_max, z, evs, evar,
              f0_sum, f1_sum, fs0_sum, fs1_sum, f0, f1, f_m, f_i, p, threads);
}

// tisfm_pool_rows on scores computed here: x (n, 4, L) is the input, w (2 motifs, 4 kw) the
// kernels with rows (motif, strand) and columns k * 4 + base, and motif m's kernels are zero
// outside columns lo[m] .. hi[m] - 1, so that s_t[p] = sum over those k and the 4 bases of
// w[2 m + t, 4 k + b] x[b, p + k], p < L - kw + 1. Rows run sequence-major: the sequence, copied
// once into a padded buffer, stays in L1 while its motifs pass; the scores never leave it.
void tisfm_conv_pool_rows(const float* x, int64_t n, int64_t L, const float* w, int64_t motifs,
                          int64_t kw, const int32_t* lo, const int32_t* hi, const float* sc0,
                          const float* sc1, const float* b0, const float* b1, const float* a,
                          int row_max, float* z, float* evs, float* evar, float* f0_sum,
                          float* f1_sum, float* fs0_sum, float* fs1_sum, float* f0, float* f1,
                          int64_t f_m, int64_t f_i, int64_t f_room, int threads) {
    const int64_t p = L - kw + 1, pp = padded(p);
    const int64_t lx = pp + kw + W;   // per base: reads reach position pp - 1 + kw - 1
    struct ConvFill {
        const float *x, *w;
        const int32_t *lo, *hi;
        int64_t L, kw, pp, lx, held = -1;   // held: the sequence in the scratch buffer
        void operator()(int64_t m, int64_t i, float* x0, float* x1, float* xs) {
            if (held != i) {   // sequence i: 4 rows of lx, zero beyond L
                for (int b = 0; b < 4; ++b) {
                    std::memcpy(xs + b * lx, x + (i * 4 + b) * L, L * sizeof(float));
                    std::fill(xs + b * lx + L, xs + (b + 1) * lx, 0.0f);
                }
                held = i;
            }
            const float *w0 = w + (2 * m) * 4 * kw, *w1 = w0 + 4 * kw;
            const int64_t k0 = lo[m], k1 = hi[m];
            // UC position blocks at once: 2 UC independent accumulator chains, 2 FMAs per load
            constexpr int UC = 4;
            int64_t j = 0;
            for (; j + UC * W <= pp; j += UC * W) {
                vf a0[UC] = {}, a1[UC] = {};
                for (int64_t k = k0; k < k1; ++k)
                    for (int b = 0; b < 4; ++b) {
                        const vf u0 = splat(w0[4 * k + b]), u1 = splat(w1[4 * k + b]);
                        const float* xb = xs + b * lx + j + k;
                        for (int u = 0; u < UC; ++u) {
                            const vf xv = load(xb + u * W);
                            a0[u] += u0 * xv;
                            a1[u] += u1 * xv;
                        }
                    }
                for (int u = 0; u < UC; ++u) {
                    store(x0 + j + u * W, a0[u]);
                    store(x1 + j + u * W, a1[u]);
                }
            }
            for (; j < pp; j += W) {
                vf c0 = {}, c1 = {};
                for (int64_t k = k0; k < k1; ++k)
                    for (int b = 0; b < 4; ++b) {
                        const vf xv = load(xs + b * lx + j + k);
                        c0 += splat(w0[4 * k + b]) * xv;
                        c1 += splat(w1[4 * k + b]) * xv;
                    }
                store(x0 + j, c0);
                store(x1 + j, c1);
            }
        }
    };
    const ConvFill fill{x, w, lo, hi, L, kw, pp, lx};
    pool_rows(fill, true, 4 * lx, motifs, n, p, sc0, sc1, b0, b1, a, row_max, z, evs, evar,
              f0_sum, f1_sum, fs0_sum, fs1_sum, f0, f1, f_m, f_i, f_room, threads);
}
// Input gradient of the motif convolution, the transposed convolution of tisfm_conv_pool_rows:
// dx[i, b, q] = sum over rows r = 2 m + t and k in lo[m] .. hi[m] - 1 of
// g[i, r] w[r, 4 k + b] f[i, r, q - k], f (n, 2 motifs, p) (zero outside 0 .. p - 1), g (n, 2
// motifs), dx (n, 4, p + kw - 1); the rows of f start every fr >= p floats. Per sequence, rows go in tiles copied into zero-padded rows (no
// edge cases, and the tile stays in L1/L2 while every block of 2 W positions passes over it);
// a block keeps its 4 bases x 2 vectors of sums in registers: 8 FMAs per 2 loads.
void tisfm_input_gradient(const float* f, int64_t n, int64_t motifs, int64_t p, int64_t fr,
                          const float* w, int64_t kw, const int32_t* lo, const int32_t* hi,
                          const float* g, float* dx, int threads) {
    constexpr int U = 3;                  // vectors per block of positions
    const int64_t L = p + kw - 1, lp = (L + U * W - 1) / (U * W) * (U * W);
    const int64_t rl = kw + lp + U * W;   // a padded row: f[j - kw] at j
    const int64_t tile = 32, rows = 2 * motifs;
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> pad(tile * rl, 0.0f), sums(4 * lp), scaled(tile * 4 * kw);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n; ++i) {
            std::fill(sums.begin(), sums.end(), 0.0f);
            for (int64_t r0 = 0; r0 < rows; r0 += tile) {
                const int64_t r1 = std::min(rows, r0 + tile);
                for (int64_t r = r0; r < r1; ++r) {
                    const int64_t m = r / 2;
                    if (hi[m] <= lo[m]) continue;
                    std::memcpy(pad.data() + (r - r0) * rl + kw, f + (i * rows + r) * fr, p * sizeof(float));
                    const float c = g[i * rows + r];
                    for (int64_t j = 4 * lo[m]; j < 4 * hi[m]; ++j)
                        scaled[(r - r0) * 4 * kw + j] = c * w[r * 4 * kw + j];
                }
                for (int64_t q = 0; q < lp; q += U * W) {
                    vf acc[4][U];
                    for (int b = 0; b < 4; ++b)
                        for (int u = 0; u < U; ++u) acc[b][u] = load(sums.data() + b * lp + q + u * W);
                    for (int64_t r = r0; r < r1; ++r) {
                        const int64_t m = r / 2;
                        const float* row = pad.data() + (r - r0) * rl + kw + q;
                        const float* u = scaled.data() + (r - r0) * 4 * kw;
                        for (int64_t k = lo[m]; k < hi[m]; ++k) {
                            vf fv[U];
                            for (int v = 0; v < U; ++v) fv[v] = load(row - k + v * W);
                            for (int b = 0; b < 4; ++b) {
                                const vf ub = splat(u[4 * k + b]);
                                for (int v = 0; v < U; ++v) acc[b][v] += ub * fv[v];
                            }
                        }
                    }
                    for (int b = 0; b < 4; ++b)
                        for (int u = 0; u < U; ++u) store(sums.data() + b * lp + q + u * W, acc[b][u]);
                }
            }
            for (int b = 0; b < 4; ++b)
                std::memcpy(dx + (i * 4 + b) * L, sums.data() + b * lp, L * sizeof(float));
        }
    }
}

// Attention of the `pairs` sequence-head pairs with 2 channels per head: a, b, v (pairs, 2, L).
// P = softmax over j of s_ij = a_i . b_j; out = v P (out_j = sum_i v_i P_ij) or, transposed,
// v P^T (out_i = sum_j v_j P_ij). lse_i = log sum_j exp(s_ij) is kept for the backward pass.
void tisfm_attention_forward(const float* a, const float* b, const float* v, int64_t pairs,
                             int64_t L, int transpose, float* out, float* lse, int threads) {
    const int64_t lp = padded(L);
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> buf(7 * lp);
        float *b0 = buf.data(), *b1 = b0 + lp, *w0 = b1 + lp, *w1 = w0 + lp, *s = w1 + lp,
              *o0 = s + lp, *o1 = o0 + lp;
        const vf last = tail_mask(L);
#pragma omp for schedule(static)
        for (int64_t h = 0; h < pairs; ++h) {
            const float *ah = a + h * 2 * L, *bh = b + h * 2 * L, *vh = v + h * 2 * L;
            float* oh = out + h * 2 * L;
            copy_padded(b0, bh, L, 0.0f);
            copy_padded(b1, bh + L, L, 0.0f);
            copy_padded(w0, vh, L, 0.0f);
            copy_padded(w1, vh + L, L, 0.0f);
            std::fill(o0, o0 + lp, 0.0f);
            std::fill(o1, o1 + lp, 0.0f);
            for (int64_t i = 0; i < L; ++i) {
                const vf x0 = splat(ah[i]), x1 = splat(ah[L + i]);
                vf top = splat(-FLT_MAX);
                for (int64_t j = 0; j < lp; j += W) {
                    vf t = x0 * load(b0 + j) + x1 * load(b1 + j);
                    if (j + W >= lp) t = last > 0 ? t : splat(-FLT_MAX);
                    store(s + j, t);
                    top = vmax(top, t);
                }
                const float mx = hmax(top);
                vf zs = splat(0), y0 = splat(0), y1 = splat(0);
                for (int64_t j = 0; j < lp; j += W) {
                    vf e = vexp(load(s + j) - mx);
                    if (j + W >= lp) e *= last;
                    store(s + j, e);
                    zs += e;
                    if (transpose) {
                        y0 += e * load(w0 + j);
                        y1 += e * load(w1 + j);
                    }
                }
                const float zr = hsum(zs);
                lse[h * L + i] = mx + std::log(zr);
                if (transpose) {
                    oh[i] = hsum(y0) / zr;
                    oh[L + i] = hsum(y1) / zr;
                    continue;
                }
                const vf c0 = splat(vh[i] / zr), c1 = splat(vh[L + i] / zr);
                for (int64_t j = 0; j < lp; j += W) {
                    vf e = load(s + j);
                    store(o0 + j, load(o0 + j) + c0 * e);
                    store(o1 + j, load(o1 + j) + c1 * e);
                }
            }
            if (!transpose) {
                std::memcpy(oh, o0, L * sizeof(float));
                std::memcpy(oh + L, o1, L * sizeof(float));
            }
        }
    }
}

// Gradients of tisfm_attention_forward: ga, gb, gv (pairs, 2, L) from go = dL/dout, with P
// rebuilt from lse. dS_ij = P_ij (dP_ij - r_i), r_i = sum_j P_ij dP_ij, ga_i = sum_j dS_ij b_j,
// gb_j = sum_i dS_ij a_i; dP_ij = v_i . go_j and gv_i = sum_j P_ij go_j (or, transposed,
// dP_ij = go_i . v_j and gv_j = sum_i P_ij go_i).
void tisfm_attention_backward(const float* a, const float* b, const float* v, const float* lse,
                              const float* go, int64_t pairs, int64_t L, int transpose,
                              float* ga, float* gb, float* gv, int threads) {
    const int64_t lp = padded(L);
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> buf(9 * lp);
        float *b0 = buf.data(), *b1 = b0 + lp, *q0 = b1 + lp, *q1 = q0 + lp, *pr = q1 + lp,
              *db0 = pr + lp, *db1 = db0 + lp, *dv0 = db1 + lp, *dv1 = dv0 + lp;
        const vf last = tail_mask(L);
#pragma omp for schedule(static)
        for (int64_t h = 0; h < pairs; ++h) {
            const int64_t o = h * 2 * L;
            const float *ah = a + o, *vh = v + o, *gh = go + o;
            copy_padded(b0, b + o, L, 0.0f);
            copy_padded(b1, b + o + L, L, 0.0f);
            // the row-side factor of dP: go (v_i . go_j) or v (go_i . v_j)
            copy_padded(q0, (transpose ? vh : gh), L, 0.0f);
            copy_padded(q1, (transpose ? vh : gh) + L, L, 0.0f);
            std::fill(db0, db0 + lp, 0.0f);
            std::fill(db1, db1 + lp, 0.0f);
            std::fill(dv0, dv0 + lp, 0.0f);
            std::fill(dv1, dv1 + lp, 0.0f);
            for (int64_t i = 0; i < L; ++i) {
                const float x0 = ah[i], x1 = ah[L + i], m = lse[h * L + i];
                // row weights of dP: dP_ij = k0 q0_j + k1 q1_j
                const float k0 = transpose ? gh[i] : vh[i], k1 = transpose ? gh[L + i] : vh[L + i];
                vf y0 = splat(0), y1 = splat(0);
                for (int64_t j = 0; j < lp; j += W) {
                    vf e = vexp(splat(x0) * load(b0 + j) + splat(x1) * load(b1 + j) - m);
                    if (j + W >= lp) e *= last;
                    store(pr + j, e);
                    y0 += e * load(q0 + j);   // sum_j P_ij q_j
                    y1 += e * load(q1 + j);
                }
                const float p0 = hsum(y0), p1 = hsum(y1);
                const float r = k0 * p0 + k1 * p1;
                if (!transpose) {   // gv_i = sum_j P_ij go_j
                    gv[o + i] = p0;
                    gv[o + L + i] = p1;
                }
                vf u0 = splat(0), u1 = splat(0);
                const vf c0 = splat(k0), c1 = splat(k1), rv = splat(r), w0 = splat(x0), w1 = splat(x1);
                for (int64_t j = 0; j < lp; j += W) {
                    vf e = load(pr + j);
                    vf ds = e * (c0 * load(q0 + j) + c1 * load(q1 + j) - rv);
                    u0 += ds * load(b0 + j);
                    u1 += ds * load(b1 + j);
                    store(db0 + j, load(db0 + j) + ds * w0);
                    store(db1 + j, load(db1 + j) + ds * w1);
                    if (transpose) {   // gv_j += P_ij go_i
                        store(dv0 + j, load(dv0 + j) + e * c0);
                        store(dv1 + j, load(dv1 + j) + e * c1);
                    }
                }
                ga[o + i] = hsum(u0);
                ga[o + L + i] = hsum(u1);
            }
            std::memcpy(gb + o, db0, L * sizeof(float));
            std::memcpy(gb + o + L, db1, L * sizeof(float));
            if (transpose) {
                std::memcpy(gv + o, dv0, L * sizeof(float));
                std::memcpy(gv + o + L, dv1, L * sizeof(float));
            }
        }
    }
}

// Per-channel tables of exact ISM for tiSFM without input attention, in padded coordinates
// (score position p at p + offset, `q` entries per table). Softmax pooling (max_pool = 0), from
// t0 = exp(a v) and t1 = t0 v of shape (channels, p): before[q'] = sum of t over p + offset < q'
// and after[q'] = sum over p + offset >= q', as tables 0, 1 (t0) and 2, 3 (t1) of out (channels,
// 4, q). Max pooling, from t0 = v: the running maxima before and after (-inf where none), tables
// 0 and 1 of out (channels, 2, q). Sums of positive terms in fp64: no cancellation.
void tisfm_ism_tables(const double* t0, const double* t1, int64_t channels, int64_t p,
                      int64_t offset, int64_t q, int max_pool, double* out, int threads) {
    const int tables = max_pool ? 2 : 4;
    const double none = max_pool ? -INFINITY : 0.0;
    const int64_t lo = std::min(std::max<int64_t>(offset, 0), q), hi = std::min(offset + p, q);
    auto step = [max_pool](double run, double x) { return max_pool ? std::max(run, x) : run + x; };
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < channels; ++c) {
        for (int t = 0; t < (max_pool ? 1 : 2); ++t) {
            const double* x = (t ? t1 : t0) + c * p - offset;   // x[k]: the score at padded k
            double* before = out + (c * tables + 2 * t) * q;
            double* after = before + q;
            // the two running values are independent chains: one loop from each end
            double run_b = none, run_a = none;
            std::fill(before, before + lo, none);
            std::fill(after + hi, after + q, none);
            for (int64_t k = lo, m = hi - 1; k < hi; ++k, --m) {
                before[k] = run_b;
                run_b = step(run_b, x[k]);
                run_a = step(run_a, x[m]);
                after[m] = run_a;
            }
            std::fill(before + hi, before + q, run_b);
            std::fill(after, after + lo, run_a);
        }
    }
}

// Pooled features of the 3 substitutions of positions i0 .. i1 - 1 (exact ISM of tiSFM without
// input attention; see tisfm_core.mutagenesis). Channel c's calibrated scores change at padded
// positions i + start[c] + j, j < width[c], from z to z + dz[c, ref_i, k, j], so that its sigmoid
// becomes 1 / (1 + exp(-z) exp(-dz)): ez (channels, q) holds exp(-z) (1 in the padding) and edz
// (channels, 4, 3, kw) exp(-dz), which leaves one exponential per window entry (that of the
// softmax weight) instead of two. mask (q) is 1 where a padded position holds a score. Per variant
// and channel the window is pooled in fp32 and added in fp64 to the table entries outside it
// (tisfm_ism_tables); feature f pools channels 2 feats[f] and 2 feats[f] + 1. Lanes are
// positions, so every load is contiguous: refs (at least i1 + W entries) are the reference bases
// 0-3. Writes out (i1 - i0, 3, n_feats) in fp64.
void tisfm_ism_pool(const float* ez, const float* mask, const double* tables, const float* edz,
                    const int64_t* start, const int64_t* width, const float* a, const int64_t* feats,
                    int64_t n_feats, int64_t q, int64_t kw, const int32_t* refs, int64_t i0,
                    int64_t i1, int max_pool, double* out, int threads) {
    const int n_tables = max_pool ? 2 : 4;
    const int64_t n = i1 - i0, np = padded(n);
#pragma omp parallel num_threads(threads)
    {
        // per strand the window sums of every position: [strand][weights, weighted values][n]
        std::vector<float> buf(4 * np);
#pragma omp for schedule(dynamic, 4)
        for (int64_t f = 0; f < n_feats; ++f) {
            for (int k = 0; k < 3; ++k) {
                for (int64_t s = 0; s < 2; ++s) {
                    const int64_t c = 2 * feats[f] + s, w = width[c];
                    const float *x = ez + c * q + i0 + start[c], *m = mask + i0 + start[c];
                    const float* d = edz + (c * 12 + k) * kw;   // reference 0; reference b at + 3 b kw
                    float *sd = buf.data() + 2 * s * np, *sn = sd + np;
                    std::fill(sd, sd + np, max_pool ? -INFINITY : 0.0f);
                    std::fill(sn, sn + np, 0.0f);
                    const vf av = splat(a[c]);
                    // positions innermost: long loops of independent vectors
                    for (int64_t j = 0; j < w; ++j) {
                        const vf d0 = splat(d[j]), d1 = splat(d[3 * kw + j]), d2 = splat(d[6 * kw + j]),
                                 d3 = splat(d[9 * kw + j]);
                        for (int64_t b = 0; b < np; b += W) {
                            vi r;
                            std::memcpy(&r, refs + i0 + b, sizeof r);
                            const vf dd = r == 3 ? d3 : (r == 2 ? d2 : (r == 1 ? d1 : d0));
                            // the bound keeps the reciprocal's Newton step finite where exp overflows
                            const vf v = vrecip(vmin(splat(1.0f) + load(x + b + j) * dd, splat(1e30f)));
                            const vf mj = load(m + b + j);
                            if (max_pool) {
                                store(sd + b, vmax(load(sd + b), mj > 0 ? v : splat(-INFINITY)));
                            } else {   // |a| <= 80: exp(a v) needs no shift
                                const vf e = vexp<false>(v * av) * mj;
                                store(sd + b, load(sd + b) + e);
                                store(sn + b, load(sn + b) + e * v);
                            }
                        }
                    }
                }
                // fp64: the window sums of both strands plus the tables' sums before and after
                const int64_t c0 = 2 * feats[f], c1 = c0 + 1;
                const double *t0 = tables + c0 * n_tables * q + i0 + start[c0],
                             *t1 = tables + c1 * n_tables * q + i0 + start[c1];
                const int64_t a0 = width[c0], a1 = width[c1];
                const float *sd0 = buf.data(), *sn0 = sd0 + np, *sd1 = sn0 + np, *sn1 = sd1 + np;
                double* y = out + k * n_feats + f;
                for (int64_t l = 0; l < n; ++l) {
                    double v;
                    if (max_pool) {
                        v = std::max(std::max<double>(sd0[l], std::max(t0[l], t0[q + a0 + l])),
                                     std::max<double>(sd1[l], std::max(t1[l], t1[q + a1 + l])));
                    } else {
                        const double den = (double)sd0[l] + t0[l] + t0[q + a0 + l] + sd1[l] + t1[l] +
                                           t1[q + a1 + l];
                        const double num = (double)sn0[l] + t0[2 * q + l] + t0[3 * q + a0 + l] + sn1[l] +
                                           t1[2 * q + l] + t1[3 * q + a1 + l];
                        v = num / den;
                    }
                    y[l * 3 * n_feats] = v;
                }
            }
        }
    }
}

}  // extern "C"
