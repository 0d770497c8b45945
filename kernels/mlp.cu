// The MLP's element-wise parts (pfode::nn); the matrix products are cuBLAS GEMMs.
//
// embed: h_0 = [x, sin(omega_k s), cos(omega_k s)] row by row (h row-major, n x (d + 2m)).
// bias_act: z += bias (broadcast over rows), then SiLU(z) = z / (1 + e^-z) in place if silu != 0.

#define EMBED_KERNEL(NAME, T)                                                                  \
    extern "C" __global__ void NAME(const T* x, const T* omega, T s, int n, int d, int m,     \
                                    T* h) {                                                    \
        int idx = blockIdx.x * blockDim.x + threadIdx.x;                                      \
        int w = d + 2 * m;                                                                     \
        if (idx >= n * w) return;                                                              \
        int row = idx / w, col = idx % w;                                                      \
        T v;                                                                                   \
        if (col < d) v = x[(size_t)row * d + col];                                             \
        else if (col < d + m) v = sin(omega[col - d] * s);                                     \
        else v = cos(omega[col - d - m] * s);                                                  \
        h[idx] = v;                                                                            \
    }

#define BIAS_ACT_KERNEL(NAME, T)                                                               \
    extern "C" __global__ void NAME(T* z, const T* bias, int n, int width, int silu) {        \
        int idx = blockIdx.x * blockDim.x + threadIdx.x;                                      \
        if (idx >= n * width) return;                                                          \
        T v = z[idx] + bias[idx % width];                                                      \
        z[idx] = silu ? v / (1 + exp(-v)) : v;                                                 \
    }

EMBED_KERNEL(embed_f32, float)
EMBED_KERNEL(embed_f64, double)
BIAS_ACT_KERNEL(bias_act_f32, float)
BIAS_ACT_KERNEL(bias_act_f64, double)
