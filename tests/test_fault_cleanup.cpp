// What a stopped run leaves behind (io/fault_cleanup.hpp, io/output_file.hpp): a signal removes the temporary
// outputs and exits 128 + signal; an input truncated while mapped is an error naming it (exit 2), not a bare SIGBUS;
// temporaries of killed runs are removed by the next run over the same output. Each case runs in a child process.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "qz/io/fault_cleanup.hpp"
#include "qz/io/mapped_file.hpp"
#include "qz/io/output_file.hpp"
#include "test_util.hpp"

extern char** environ;

namespace qz {
namespace {

namespace fs = std::filesystem;

bool has_temporary(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  return false;
}

TEST(FaultCleanup, AnInputTruncatedWhileMappedIsAnErrorNamingItAndLeavesNoTemporary) {
  test::TempDir dir;
  const fs::path in = dir / "input.bin", out = dir / "out.gguf", err = dir / "stderr.txt";
  { std::ofstream(in, std::ios::binary) << std::string(1 << 20, 'x'); }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::FILE* e = std::freopen(err.c_str(), "w", stderr);
    (void)e;
    install_fault_handlers();
    OutputFile o(out, false);
    o.write("partial", 7);
    const MappedFile m(in);
    if (::truncate(in.c_str(), 0) != 0) _exit(10);
    volatile uint8_t v = m.bytes()[1 << 19];  // beyond the new end: SIGBUS
    (void)v;
    _exit(11);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream f(err);
  const std::string msg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(msg.find(in.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated or changed while it was being read"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(has_temporary(dir.path()));
}

TEST(FaultCleanup, TerminationRemovesTheTemporaryOutputAndExits128PlusTheSignal) {
  test::TempDir dir;
  const fs::path out = dir / "out.gguf";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    install_fault_handlers();
    OutputFile o(out, false);
    o.write("partial", 7);
    for (;;) pause();
  }
  for (int i = 0; i < 500 && !has_temporary(dir.path()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(has_temporary(dir.path()));
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  EXPECT_FALSE(has_temporary(dir.path()));
  EXPECT_FALSE(fs::exists(out));
}

TEST(FaultCleanup, TheCliRemovesItsTemporaryOnSigintMidRun) {
  test::TempDir dir;
  const std::string bin = QZ_QUANTIZE_BIN, demo = (dir / "demo").string();
  ASSERT_EQ(std::system((bin + " make-demo " + demo + " -q").c_str()), 0);
  const std::string out = (dir / "out.gguf").string(), calib = demo + "/calib.txt";
  const char* argv[] = {bin.c_str(), demo.c_str(), "-o", out.c_str(), "--method", "gptq", "--calib", calib.c_str(),
                        "--calib-samples", "64", "-q", nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, bin.c_str(), nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  bool seen = false;
  for (int i = 0; i < 2000 && !(seen = has_temporary(dir.path())); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_TRUE(seen) << "the run never had a temporary output (it takes seconds: the pass runs while it is open)";
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(has_temporary(dir.path()));
}

TEST(FaultCleanup, AKilledRunsTemporaryIsRemovedByTheNextRunOverTheSameOutput) {
  test::TempDir dir;
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);  // a process that is gone
  const fs::path stale = dir / (".out.gguf.tmp." + std::to_string(dead) + ".AbCdEf");
  const fs::path live = dir / (".out.gguf.tmp." + std::to_string(getpid()) + ".GhIjKl");
  const fs::path other = dir / (".other.gguf.tmp." + std::to_string(dead) + ".MnOpQr");
  for (const auto& p : {stale, live, other}) std::ofstream(p) << "x";
  {
    OutputFile o(dir / "out.gguf", false);
    o.write("done", 4);
    o.commit();
  }
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));   // its process (this one) is alive
  EXPECT_TRUE(fs::exists(other));  // another output's
}

}  // namespace
}  // namespace qz
