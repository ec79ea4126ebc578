// Large working buffers (a Hessian, its factor, a layer's weights) are first touched page by page; on virtual
// machines each 4 KiB page fault is costly (here about 16 us: 0.8 s to fault in 192 MB). Transparent huge pages
// (madvise mode, as Debian ships the kernel) take 2 MiB at a time.
#pragma once

#include <cstddef>

namespace qz {

// Advises huge pages for the 2 MiB-aligned part of [p, p + bytes) (advice only; nothing happens below 4 MiB).
// Call after allocating and before first writing.
void advise_huge_pages(void* p, size_t bytes) noexcept;

}  // namespace qz
