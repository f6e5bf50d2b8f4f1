/* heap — bytes of heap in use, for the unit tests that assert memory stays bounded. Under
 * AddressSanitizer malloc statistics are the sanitizer's, so ask it instead of glibc. */
#ifndef WALCAST_TEST_HEAP_H
#define WALCAST_TEST_HEAP_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
/* From <sanitizer/allocator_interface.h>, which gcc does not install. */
size_t __sanitizer_get_current_allocated_bytes(void);
#else
#include <malloc.h>
#endif

/* Heap bytes currently allocated (mmapped blocks included). */
static inline size_t heap_in_use(void)
{
#ifdef TEST_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
#endif
}

#endif
