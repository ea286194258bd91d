// A second translation unit, so that a shared object can hold two fatbin containers (modules).
extern "C" __global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }
