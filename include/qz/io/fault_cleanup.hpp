// What a stopped run leaves behind. Outputs are written to temporary files (output_file.hpp) and inputs are memory
// mapped (mapped_file.hpp); both register here, in fixed slots a signal handler can read without allocating:
//  - SIGINT, SIGTERM, SIGHUP: every registered temporary file is removed, exit code 128 + the signal;
//  - SIGBUS inside a registered mapping (an input truncated or changed while it is read): a message naming the
//    file on stderr, the temporaries removed, exit code 2 (bad input), as for any other input error.
// kill -9 cannot be caught: temporaries are named `.NAME.tmp.PID.XXXXXX` beside the output, and a later run over the
// same output removes the ones whose process is gone (output_file.cpp).
#pragma once

#include <cstddef>

namespace qz {

// Slot handles; -1 when every slot is taken (the file is then simply not cleaned up by a signal).
int register_temporary(const char* path);
void unregister_temporary(int slot);
int register_mapping(const void* base, size_t size, const char* path);
void unregister_mapping(int slot);

// Installs the handlers (the CLI does, once, at start).
void install_fault_handlers();

}  // namespace qz
