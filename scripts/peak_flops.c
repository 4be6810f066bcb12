// Peak single-precision FMA throughput of this machine: 10 independent FMA chains per thread, in the widest
// vectors the build targets (AVX-512 when compiled with -mavx512f, else AVX2).
// Build: gcc -O3 -funroll-loops -march=native -fopenmp scripts/peak_flops.c -o /tmp/peak && OMP_NUM_THREADS=2 /tmp/peak
//        (add -mno-avx512f for the AVX2 figure)
// On the AVX-512 EPYC of BENCHMARKS.md this reads ~240 GFLOP/s while oneDNN's SGEMM sustains 400+: there it is
// a lower bound, not the ceiling.
#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ISA "avx512"
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ISA "avx2"
#endif
int main(){
  for(int rep=0;rep<3;rep++){
    double t0=omp_get_wtime(); long iters=200000000;
    float out=0;
    #pragma omp parallel reduction(+:out)
    {
      vec a[10]; for(int i=0;i<10;i++) a[i]=SET1(i*0.001f);
      vec b=SET1(0.9999f), c=SET1(0.00001f);
      for(long k=0;k<iters/10;k++){ for(int i=0;i<10;i++) a[i]=FMA(a[i],b,c); }
      for(int i=0;i<10;i++) out+=a[i][0];
    }
    double t=omp_get_wtime()-t0; int nt=omp_get_max_threads();
    printf("%s, %d threads: %.1f GFLOP/s (%f)\n", ISA, nt, (double)iters*2*LANES*nt/t/1e9, out);
  }
}
