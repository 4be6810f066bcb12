#ifndef CLIBFUZZER_SHIM_H
#define CLIBFUZZER_SHIM_H
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's driver (in the runtime -sanitize=fuzzer links): parses libFuzzer's flags from argc/argv and calls
   UserCb with each input. SwiftPM gives executables their own `main`, so the harnesses call it from theirs. */
int LLVMFuzzerRunDriver(int *_Nonnull argc, char *_Nullable *_Nullable *_Nonnull argv,
                        int (*_Nonnull UserCb)(const uint8_t *_Nonnull Data, size_t Size));

#endif
