// The reference for `swiftai bench allreduce`: the same loop over a bare MPI_Allreduce (float32 sum, in place), with
// the same sizes, repetitions, warm-up and JSON. Build and run (BENCHMARKS.md, issue #21):
//   mpicc -O2 -o .build/allreduce_bench scripts/allreduce_bench.c
//   mpirun -np 2 .build/allreduce_bench [MIN_BYTES MAX_BYTES]
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long min_bytes = argc > 1 ? atol(argv[1]) : 4 << 10, max_bytes = argc > 2 ? atol(argv[2]) : 64 << 20;
    for (long bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
        long reps = (1L << 30) / bytes;
        reps = reps < 10 ? 10 : reps > 200 ? 200 : reps;
        long warmup = reps / 10 < 2 ? 2 : reps / 10;
        float *buf = calloc(bytes / 4, sizeof(float));
        double *t = malloc(reps * sizeof(double));
        for (long i = 0; i < warmup + reps; i++) {
            double t0 = now();
            MPI_Allreduce(MPI_IN_PLACE, buf, bytes / 4, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (i >= warmup) t[i - warmup] = now() - t0;
        }
        qsort(t, reps, sizeof(double), by_value);
        double s = t[reps / 2], bus = 2.0 * (size - 1) / size * bytes / s / 1e9;
        if (rank == 0) {
            printf("{\"bench\":\"allreduce\",\"impl\":\"c\",\"bytes\":%ld,\"world_size\":%d,\"reps\":%ld,"
                   "\"seconds_median\":%.3g,\"bus_gbytes_per_s\":%.3f}\n",
                   bytes, size, reps, s, bus);
            fflush(stdout);
        }
        free(t);
        free(buf);
    }
    MPI_Finalize();
    return 0;
}
