/* What the example program needs from the machine it runs on: a console, an exit code, a
   cycle-ish counter and the stack's bounds. platform_mps2.c implements it for Arm's MPS2
   boards (bare metal; semihosting console), platform_host.c with stdio. */
#ifndef HWCOMPILE_EXAMPLE_PLATFORM_H_
#define HWCOMPILE_EXAMPLE_PLATFORM_H_

#include <stdint.h>

void platform_write(const char* text);
void platform_exit(int code);
/* A free-running counter (SysTick on MPS2, counting up here), 0 where there is none. */
uint32_t platform_ticks(void);
/* Ticks taken by a loop of 2 * iterations + 2 instructions: the tick-to-instruction ratio. */
uint32_t platform_calibrate(uint32_t iterations);
/* Fill the unused stack below the caller's frame with a pattern; after running code, the
   deepest byte it overwrote, as a distance below the caller's stack pointer (0: unknown). */
void platform_paint_stack(void);
uint32_t platform_stack_used(void);

#endif
