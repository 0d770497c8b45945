// The exact Gaussian-mixture oracle at one noise level (alpha, sigma), one thread per row.
//
// Component k at that level is N(alpha mu_k, U_k diag(v_k) U_k^T), v_kj = alpha^2 l_kj + sigma^2,
// with U_k the eigenvectors (columns; stored row-major d x d) and l_k the eigenvalues of Sigma_k.
// With z = U_k^T (x - alpha mu_k):
//   ln w_k N(x)   = ln w_k - (sum_j z_j^2 / v_j + ln v_j + ln 2 pi) / 2,
//   E[x0 | x, k]  = mu_k + U_k (alpha l_k / v_k * z),
//   score_k(x)    = -U_k (z / v_k),
// responsibilities r_k by log-sum-exp, and out = a x0_hat + b score for the (a, b) of the
// requested prediction type (pfode::prediction). Dimensions up to MAX_D, components up to MAX_K.

#define MAX_D 64
#define MAX_K 64

template <typename T>
__device__ void gmm_row(const T* x, const T* mu, const T* u, const T* lam, const T* logw,
                        int d, int K, T alpha, T sigma, T a, T b, T* out) {
    T logp[MAX_K];
    T z[MAX_D];
    T x0[MAX_D];
    T score[MAX_D];
    const T log2pi = (T)1.8378770664093453;
    T top = 0;
    for (int k = 0; k < K; ++k) {
        const T* U = u + (size_t)k * d * d;
        T acc = logw[k];
        for (int j = 0; j < d; ++j) {
            T zj = 0;
            for (int i = 0; i < d; ++i) zj += U[i * d + j] * (x[i] - alpha * mu[k * d + i]);
            T v = alpha * alpha * lam[k * d + j] + sigma * sigma;
            acc -= (zj * zj / v + log(v) + log2pi) / 2;
        }
        logp[k] = acc;
        if (k == 0 || acc > top) top = acc;
    }
    T total = 0;
    for (int k = 0; k < K; ++k) {
        logp[k] = exp(logp[k] - top);
        total += logp[k];
    }
    for (int i = 0; i < d; ++i) { x0[i] = 0; score[i] = 0; }
    for (int k = 0; k < K; ++k) {
        T r = logp[k] / total;
        const T* U = u + (size_t)k * d * d;
        for (int j = 0; j < d; ++j) {
            T zj = 0;
            for (int i = 0; i < d; ++i) zj += U[i * d + j] * (x[i] - alpha * mu[k * d + i]);
            z[j] = zj / (alpha * alpha * lam[k * d + j] + sigma * sigma);
        }
        for (int i = 0; i < d; ++i) {
            T gain = 0, s = 0;
            for (int j = 0; j < d; ++j) {
                gain += U[i * d + j] * alpha * lam[k * d + j] * z[j];
                s += U[i * d + j] * z[j];
            }
            x0[i] += r * (mu[k * d + i] + gain);
            score[i] -= r * s;
        }
    }
    for (int i = 0; i < d; ++i) out[i] = a * x0[i] + b * score[i];
}

#define GMM_KERNEL(NAME, T)                                                                    \
    extern "C" __global__ void NAME(const T* x, const T* mu, const T* u, const T* lam,        \
                                    const T* logw, int n, int d, int K, T alpha, T sigma,     \
                                    T a, T b, T* out) {                                       \
        int row = blockIdx.x * blockDim.x + threadIdx.x;                                      \
        if (row < n)                                                                           \
            gmm_row<T>(x + (size_t)row * d, mu, u, lam, logw, d, K, alpha, sigma, a, b,       \
                       out + (size_t)row * d);                                                 \
    }

GMM_KERNEL(gmm_f32, float)
GMM_KERNEL(gmm_f64, double)
