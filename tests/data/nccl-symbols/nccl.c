/* A stand-in libnccl.so.2 with NCCL's names: OLD builds it without the point-to-point API
   (ncclSend/ncclRecv), as an NCCL older than the one torch was built against. */
int ncclGetVersion(int *version) { *version = 22907; return 0; }
int ncclAllReduce(void) { return 0; }
#ifndef OLD
int ncclSend(void) { return 0; }
int ncclRecv(void) { return 0; }
#endif
