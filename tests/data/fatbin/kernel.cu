// Device code for the fatbin fixtures: one tiny kernel, compiled per variant by make_fixtures.sh.
extern "C" __global__ void add(float *x, float a) { x[threadIdx.x] += a; }
