#ifndef CDNNL_SHIM_H
#define CDNNL_SHIM_H
#include <oneapi/dnnl/dnnl.h>
#include <malloc.h>  // malloc_trim: the block cache returns freed heap memory to the system

// DNNL_MEMORY_ALLOCATE is ((void *)(size_t)-1): a cast macro Swift cannot import.
static inline void *cdnnl_memory_allocate(void) { return DNNL_MEMORY_ALLOCATE; }

// libgomp's entry points (the OpenMP runtime oneDNN itself runs on). SwiftAI's own parallel
// loops use the same thread team, so oneDNN's spinning workers never compete with a second pool.
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
int omp_get_max_threads(void);
void omp_set_num_threads(int n);
#endif
