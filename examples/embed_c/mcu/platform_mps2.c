/* The example's platform layer on Arm's MPS2 boards (AN385: Cortex-M3, AN386: Cortex-M4F),
   bare metal, as QEMU's mps2-an385/mps2-an386 machines emulate them: the vector table and
   reset code, console and exit code through semihosting, SysTick as the counter.
   Linker script: mps2.ld. */
#include <stdint.h>

#include "platform.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__, __stack_limit__;
int main(void);

/* Semihosting (Arm's debug-host call interface; QEMU: -semihosting-config enable=on). */
#define SYS_WRITE0 0x04
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static uint32_t semihost(uint32_t op, const void* arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void platform_write(const char* text) { semihost(SYS_WRITE0, text); }

void platform_exit(int code) {
  uint32_t block[2];
  block[0] = ADP_STOPPED_APPLICATION_EXIT;
  block[1] = (uint32_t)code;
  semihost(SYS_EXIT_EXTENDED, block);
  for (;;) {
  }
}

/* SysTick, on the processor clock, counting down from 2^24 - 1. */
#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)

uint32_t platform_ticks(void) { return (0x00FFFFFFu - SYST_CVR) & 0x00FFFFFFu; }

uint32_t platform_calibrate(uint32_t iterations) {
  uint32_t start = platform_ticks();
  __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(iterations) : : "cc");
  return (platform_ticks() - start) & 0x00FFFFFFu;
}

/* Stack probe: paint from the stack's limit up to just below this function's frame
   (which sits right under the caller's); measure from there. */
#define STACK_PAINT 0xC5C5C5C5u
static uintptr_t stack_reference;

void platform_paint_stack(void) {
  uint32_t here;
  uint32_t* word = &__stack_limit__;
  uintptr_t end = (uintptr_t)&here - 64u; /* a band for this function's own frame */
  stack_reference = (uintptr_t)&here;
  while ((uintptr_t)word < end) *word++ = STACK_PAINT;
}

uint32_t platform_stack_used(void) {
  uint32_t* word = &__stack_limit__;
  while ((uintptr_t)word < stack_reference && *word == STACK_PAINT) ++word;
  return (uint32_t)(stack_reference - (uintptr_t)word);
}

static void fault(void) {
  platform_write("fault: the program took a processor exception\n");
  platform_exit(3);
}

void reset(void) {
  uint32_t* src = &__data_load__;
  uint32_t* dst = &__data_start__;
  while (dst < &__data_end__) *dst++ = *src++;
  for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
#if defined(__ARM_FP)
  (*(volatile uint32_t*)0xE000ED88u) |= 0xFu << 20; /* CPACR: enable CP10/CP11 (the FPU) */
  __asm__ volatile("dsb\n isb");
#endif
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 5u; /* enable, processor clock, no interrupt */
  platform_exit(main());
}

/* Initial stack pointer, then the exception handlers (reset, NMI, HardFault, MemManage,
   BusFault, UsageFault). */
__attribute__((section(".vectors"), used)) static void (*const vectors[])(void) = {
    (void (*)(void))(&__stack_top__), reset, fault, fault, fault, fault, fault};
