/* The example's platform layer on a hosted system: stdio, no counter, no stack probe. */
#include <stdio.h>
#include <stdlib.h>

#include "platform.h"

void platform_write(const char* text) { fputs(text, stdout); }
void platform_exit(int code) {
  fflush(stdout);
  exit(code);
}
uint32_t platform_ticks(void) { return 0; }
uint32_t platform_calibrate(uint32_t iterations) {
  (void)iterations;
  return 0;
}
void platform_paint_stack(void) {}
uint32_t platform_stack_used(void) { return 0; }
