/* Classify 8x8 digits with the compiled model through its C API.
 *
 *   embed_c_example IMAGES.f32 LOGITS.f32 [WEIGHTS_FILE]
 *
 * IMAGES.f32 holds N images as raw float32 (N x DIGITS_INPUT0_BYTES bytes, values in [0,1]);
 * LOGITS.f32 receives N x DIGITS_OUTPUT0_BYTES bytes of raw float32 logits. Prints the
 * predicted class of each image. Exits non-zero with the library's message on error.
 */
#include <stdio.h>
#include <stdlib.h>

#include "digits.h"

static int fail(const char* what, int status) {
  fprintf(stderr, "error: %s: %s (%s)\n", what, digits_status_string(status), digits_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s IMAGES.f32 LOGITS.f32 [WEIGHTS_FILE]\n", argv[0]);
    return 2;
  }
  printf("digits: weights %d B, activations %d B, I/O %d B per run\n", DIGITS_WEIGHT_BYTES,
         DIGITS_ACTIVATION_BYTES, DIGITS_IO_BYTES);
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  if (in == NULL || out == NULL) {
    fprintf(stderr, "error: cannot open %s or %s\n", argv[1], argv[2]);
    return 1;
  }
  digits_model* model = NULL;
  int status = digits_create(argc == 4 ? argv[3] : NULL, &model);
  if (status != HWC_OK) return fail("digits_create", status);

  float image[DIGITS_INPUT0_BYTES / sizeof(float)];
  float logits[DIGITS_OUTPUT0_BYTES / sizeof(float)];
  const void* inputs[DIGITS_NUM_INPUTS] = {image};
  void* outputs[DIGITS_NUM_OUTPUTS] = {logits};
  const size_t classes = sizeof(logits) / sizeof(logits[0]);
  while (fread(image, 1, sizeof(image), in) == sizeof(image)) {
    status = digits_run(model, inputs, DIGITS_NUM_INPUTS, outputs, DIGITS_NUM_OUTPUTS);
    if (status != HWC_OK) return fail("digits_run", status);
    size_t best = 0;
    for (size_t i = 1; i < classes; ++i) best = logits[i] > logits[best] ? i : best;
    printf("%zu\n", best);
    fwrite(logits, 1, sizeof(logits), out);
  }
  digits_destroy(model);
  fclose(in);
  fclose(out);
  return 0;
}
