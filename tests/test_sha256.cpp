// SHA-256 against the FIPS 180-4 example vectors, in one piece and fed in uneven pieces, and of a file.
#include "qz/core/sha256.hpp"

#include <gtest/gtest.h>

#include "qz/core/error.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

std::span<const uint8_t> bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

TEST(Sha256, FipsExampleVectors) {
  EXPECT_EQ(sha256_hex(bytes("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(bytes("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(bytes(std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PiecesAndFilesHashAsOneMessage) {
  const std::string msg(1000, 'x');
  Sha256 s;
  for (size_t at = 0, n = 1; at < msg.size(); at += n, n = n * 3 % 97 + 1)
    s.update(bytes(msg.substr(at, std::min(n, msg.size() - at))));
  EXPECT_EQ(s.hex_digest(), sha256_hex(bytes(msg)));
  test::TempDir dir;
  test::write_bytes(dir / "f", {msg.begin(), msg.end()});
  EXPECT_EQ(sha256_file(dir / "f"), sha256_hex(bytes(msg)));
  EXPECT_THROW(sha256_file(dir / "missing"), InputError);
}

}  // namespace
}  // namespace qz
