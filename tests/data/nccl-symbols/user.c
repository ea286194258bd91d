/* A stand-in of libtorch_cuda.so: links libnccl.so.2 and calls its collectives and point-to-point API. */
int ncclGetVersion(int *version);
int ncclAllReduce(void);
int ncclSend(void);
int ncclRecv(void);
int user_all(void) { int v; return ncclGetVersion(&v) + ncclAllReduce() + ncclSend() + ncclRecv(); }
