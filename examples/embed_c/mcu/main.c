/* Runs a runtime-free model (hwcompile compile ... --emit c-standalone) on samples compiled
 * into the program and prints, per sample, its output bytes in hex and the counter's ticks
 * for the run; then the stack the runs used and a counter calibration. Bare metal on MPS2
 * (platform_mps2.c) or hosted (platform_host.c). Build with
 *   -DHWC_MODEL=digits -DHWC_MODEL_UPPER=DIGITS -DHWC_MODEL_HEADER='"digits.h"'
 * and a samples.c defining the arrays declared below (samples.py writes one).
 */
#include <stddef.h>
#include <stdint.h>

#include HWC_MODEL_HEADER
#include "platform.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define MODEL_RUN CAT(HWC_MODEL, _run)
#define MODEL(macro) CAT(HWC_MODEL_UPPER, macro)

#if MODEL(_NUM_INPUTS) != 1 || MODEL(_NUM_OUTPUTS) != 1
#error "this example runs models with one input and one output"
#endif

#define MAX_SAMPLES 128

extern const unsigned char hwc_samples[];  /* num_samples inputs, back to back */
extern const uint32_t hwc_num_samples;

/* 8-byte aligned, sized for any dtype. */
static uint64_t outputs[MAX_SAMPLES][(MODEL(_OUTPUT0_BYTES) + 7) / 8];
static uint32_t ticks[MAX_SAMPLES];

static void write_hex(const unsigned char* bytes, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char line[65];
  size_t i = 0, used = 0;
  for (i = 0; i < n; ++i) {
    line[used++] = digits[bytes[i] >> 4];
    line[used++] = digits[bytes[i] & 15];
    if (used == 64 || i + 1 == n) {
      line[used] = '\0';
      platform_write(line);
      used = 0;
    }
  }
}

static void write_number(const char* label, uint32_t value) {
  char text[12];
  int i = 11;
  text[i] = '\0';
  do {
    text[--i] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  platform_write(label);
  platform_write(text + i);
  platform_write("\n");
}

int main(void) {
  uint32_t n = hwc_num_samples < MAX_SAMPLES ? hwc_num_samples : MAX_SAMPLES;
  uint32_t i, stack;
  platform_paint_stack();
  for (i = 0; i < n; ++i) {
    const void* inputs[1];
    void* outs[1];
    uint32_t start;
    int status;
    inputs[0] = hwc_samples + (size_t)i * MODEL(_INPUT0_BYTES);
    outs[0] = outputs[i];
    start = platform_ticks();
    status = MODEL_RUN(inputs, 1, outs, 1);
    ticks[i] = (platform_ticks() - start) & 0x00FFFFFFu;
    if (status != HWC_OK) {
      write_number("error: status ", (uint32_t)status);
      return 1;
    }
  }
  stack = platform_stack_used();
  for (i = 0; i < n; ++i) {
    platform_write("out ");
    write_hex((const unsigned char*)outputs[i], MODEL(_OUTPUT0_BYTES));
    platform_write("\n");
    write_number("ticks ", ticks[i]);
  }
  write_number("stack ", stack);
  write_number("calibration_ticks ", platform_calibrate(1000000u));
  write_number("calibration_instructions ", 2000002u);
  platform_write("done\n");
  return 0;
}
