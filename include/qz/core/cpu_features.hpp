// Which instruction-set paths the run-time dispatched kernels may take. The answer is the CPU's, unless the
// environment variable QZ_BASELINE_ISA is set to anything but "" or "0": then every kernel takes its baseline path,
// which is how the tests check that both paths give the same bytes on a machine that has the wider one.
#pragma once

namespace qz {

bool cpu_has_avx2();       // AVX2 (the 8-lane searches of the K-quants)
bool cpu_has_avx2_f16c();  // AVX2 and F16C (the legacy block quantizers)

}  // namespace qz
