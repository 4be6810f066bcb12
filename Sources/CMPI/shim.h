#ifndef CMPI_SHIM_H
#define CMPI_SHIM_H
// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE) are macros over global objects that Swift
// cannot import: these inline functions name them. Types and operations are passed as small integer codes.
#include <mpi.h>
#include <stddef.h>

enum { CMPI_FLOAT32 = 0, CMPI_FLOAT64 = 1, CMPI_INT64 = 2, CMPI_BYTE = 3 };
enum { CMPI_SUM = 0, CMPI_MAX = 1, CMPI_MIN = 2 };

static inline MPI_Datatype cmpi_type(int t) {
    switch (t) {
    case CMPI_FLOAT32: return MPI_FLOAT;
    case CMPI_FLOAT64: return MPI_DOUBLE;
    case CMPI_INT64: return MPI_INT64_T;
    default: return MPI_BYTE;
    }
}

static inline MPI_Op cmpi_op(int op) { return op == CMPI_MAX ? MPI_MAX : op == CMPI_MIN ? MPI_MIN : MPI_SUM; }

static inline int cmpi_initialized(void) {
    int flag = 0;
    MPI_Initialized(&flag);
    return flag;
}

// MPI_Init_thread asking for `required`; errors are returned (not fatal) on the world communicator afterwards.
static inline int cmpi_init(int serialized, int *provided) {
    int rc = MPI_Init_thread(NULL, NULL, serialized ? MPI_THREAD_SERIALIZED : MPI_THREAD_FUNNELED, provided);
    if (rc == MPI_SUCCESS) MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return rc;
}
static inline int cmpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int cmpi_finalize(void) { return MPI_Finalize(); }
static inline void cmpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

static inline int cmpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
static inline int cmpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

// Rank and size among the processes of this host (MPI_COMM_TYPE_SHARED).
static inline int cmpi_local(int *rank, int *size) {
    MPI_Comm local;
    int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Comm_rank(local, rank);
    MPI_Comm_size(local, size);
    return MPI_Comm_free(&local);
}

static inline int cmpi_allreduce(void *buf, int count, int type, int op) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, count, cmpi_type(type), cmpi_op(op), MPI_COMM_WORLD);
}
static inline int cmpi_iallreduce(void *buf, int count, int type, int op, MPI_Request *request) {
    return MPI_Iallreduce(MPI_IN_PLACE, buf, count, cmpi_type(type), cmpi_op(op), MPI_COMM_WORLD, request);
}
static inline int cmpi_test(MPI_Request *request, int *done) {
    return MPI_Test(request, done, MPI_STATUS_IGNORE);
}
static inline int cmpi_wait(MPI_Request *request) { return MPI_Wait(request, MPI_STATUS_IGNORE); }
static inline int cmpi_bcast(void *buf, int count, int type, int root) {
    return MPI_Bcast(buf, count, cmpi_type(type), root, MPI_COMM_WORLD);
}
static inline int cmpi_allgather(const void *send, void *recv, int count, int type) {
    return MPI_Allgather(send, count, cmpi_type(type), recv, count, cmpi_type(type), MPI_COMM_WORLD);
}
static inline int cmpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
static inline double cmpi_wtime(void) { return MPI_Wtime(); }

// The library's own description of an error code (at most MPI_MAX_ERROR_STRING characters).
static inline int cmpi_error_string(int code, char *buf, int capacity) {
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(code, s, &n);
    if (n >= capacity) n = capacity - 1;
    for (int i = 0; i < n; i++) buf[i] = s[i];
    buf[n] = 0;
    return n;
}
#endif
