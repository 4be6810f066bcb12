// im2col + oneDNN SGEMM for the 3x3 stride-1 convolutions of resnet18 at batch 1 (BENCHMARKS.md, issue #10).
// gcc -O2 -fopenmp scripts/im2col_gemm_bench.c -o /tmp/im2col -ldnnl && OMP_NUM_THREADS=2 /tmp/im2col
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  int cfg[][3]={{7,512,512},{14,256,256},{28,128,128},{56,64,64}};
  for(int s=0;s<4;s++){
    int H=cfg[s][0],C=cfg[s][1],OC=cfg[s][2],W=H;
    float*x=malloc(4L*H*W*C),*w=malloc(4L*9*C*OC),*y=malloc(4L*H*W*OC),*col=malloc(4L*H*W*9*C);
    for(long i=0;i<(long)9*C*OC;i++)w[i]=1e-3f*(i%5);
    for(long i=0;i<(long)H*W*C;i++)x[i]=1e-3f*(i%7);
    int M=H*W,K=9*C; double best=1e9,bi=1e9;
    for(int r=0;r<30;r++){double t=now();
      #pragma omp parallel for
      for(int oh=0;oh<H;oh++)for(int ow=0;ow<W;ow++){float*d=col+((long)oh*W+ow)*K;
        for(int kh=0;kh<3;kh++){int ih=oh+kh-1; for(int kw=0;kw<3;kw++){int iw=ow+kw-1; float*dd=d+(kh*3+kw)*C;
          if(ih<0||ih>=H||iw<0||iw>=W) memset(dd,0,4*C); else memcpy(dd,x+((long)ih*W+iw)*C,4*C);}}}
      double ti=now()-t;
      dnnl_sgemm('N','N',M,OC,K,1.f,col,K,w,OC,0.f,y,OC);
      t=now()-t;if(t<best)best=t; if(ti<bi)bi=ti;}
    double fl=2.0*H*W*OC*9.0*C;
    printf("H%d C%d: total %.3f ms (im2col %.3f)  %.1f GFLOP/s\n",H,C,best*1e3,bi*1e3,fl/best/1e9);
  }
}
