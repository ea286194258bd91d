/* A shared object without any CUDA device code: the reader must return no entries for it. */
int answer(void) { return 42; }
