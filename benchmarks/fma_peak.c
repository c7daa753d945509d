/* The float32 FMA peak of this machine's cores, measured: THREADS threads, each running independent chains of
 * vector multiply-adds held in registers, as wide as the compiler's -march allows. Prints GFLOP/s.
 * Built and run by benchmarks/cpu_info.py (cc -O3 -march=native -fopenmp). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else /* SSE, NEON */
#define LANES 4
#endif
#define CHAINS 16 /* more than FMA latency x FMA pipes on any core here, so the pipes never wait */

typedef float vec __attribute__((vector_size(LANES * 4)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long steps = argc > 2 ? atol(argv[2]) : 20000000L;
    double best = 0.0;
    float sink = 0.0f;
    for (int round = 0; round < 3; round++) {
        double start = now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            vec acc[CHAINS], a, b;
            for (int l = 0; l < LANES; l++) a[l] = 0.999999f, b[l] = 1e-7f;
            for (int c = 0; c < CHAINS; c++)
                for (int l = 0; l < LANES; l++) acc[c][l] = (float)(c + l + omp_get_thread_num());
            for (long s = 0; s < steps; s++) {
#pragma GCC unroll 16
                for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * a + b;
            }
            for (int c = 0; c < CHAINS; c++)
                for (int l = 0; l < LANES; l++) sink += acc[c][l];
        }
        double seconds = now() - start;
        double gflops = 2.0 * LANES * CHAINS * (double)steps * threads / seconds / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.1f %d %g\n", best, LANES, (double)sink);
    return 0;
}
