// Peak single-precision FMA throughput of this machine (AVX2, 10 independent chains per thread).
// Build: gcc -O3 -funroll-loops -mavx2 -mfma -fopenmp scripts/peak_flops.c -o /tmp/peak && OMP_NUM_THREADS=2 /tmp/peak
#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
#include <time.h>
int main(){
  double best=0;
  for(int rep=0;rep<3;rep++){
  double t0=omp_get_wtime(); long iters=200000000;
  float out=0;
  #pragma omp parallel reduction(+:out)
  {
    __m256 a[10]; for(int i=0;i<10;i++) a[i]=_mm256_set1_ps(i*0.001f);
    __m256 b=_mm256_set1_ps(0.9999f), c=_mm256_set1_ps(0.00001f);
    for(long k=0;k<iters/10;k++){ for(int i=0;i<10;i++) a[i]=_mm256_fmadd_ps(a[i],b,c);} 
    for(int i=0;i<10;i++) out+=a[i][0];
  }
  double t=omp_get_wtime()-t0; int nt=omp_get_max_threads();
  double gf = (double)iters*16*nt/t/1e9; if(gf>best)best=gf;
  printf("%d threads: %.1f GFLOP/s (%f)\n", nt, gf, out);}
}
