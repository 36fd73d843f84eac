/* Reset and fault handling for QEMU's mps2-an385, with newlib's semihosting
 * (rdimon) for stdio, files and exit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern void initialise_monitor_handles(void);
extern int main(void);

void Reset_Handler(void);
void Fault_Handler(void);

void Reset_Handler(void)
{
	memcpy(&_sdata, &_sidata, (size_t)((char *)&_edata - (char *)&_sdata));
	memset(&_sbss, 0, (size_t)((char *)&_ebss - (char *)&_sbss));
	initialise_monitor_handles();
	exit(main());
}

void Fault_Handler(void)
{
	/* A fault ends the run with a failure, not a hang. */
	exit(3);
}

typedef void (*vector)(void);

__attribute__((section(".isr_vector"), used)) const vector vectors[16] = {
	(vector)(uintptr_t)&_estack, Reset_Handler, Fault_Handler, Fault_Handler,
	Fault_Handler,               Fault_Handler, Fault_Handler, 0,
	0,                           0,             0,             Fault_Handler,
	Fault_Handler,               0,             Fault_Handler, Fault_Handler,
};
