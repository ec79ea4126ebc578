// GPT-2's byte-to-unicode map of byte-level BPE vocabularies: printable bytes stand for themselves, the others for
// U+0100 on, in byte order (so a space is 'Ġ'). Used by the tokenizer that encodes and by the demo that writes one.
#pragma once

#include <array>
#include <string>

namespace qz {

// The UTF-8 of the character standing for each byte.
const std::array<std::string, 256>& gpt2_byte_chars();

}  // namespace qz
