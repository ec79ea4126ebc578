#include "qz/io/fault_cleanup.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace qz {

namespace {

constexpr int kSlots = 64;
constexpr size_t kPath = 4096;

struct TempSlot {
  std::atomic<bool> used{false};
  char path[kPath];
};
struct MapSlot {
  std::atomic<bool> used{false};
  const char* base = nullptr;
  size_t size = 0;
  char path[kPath];
};

TempSlot g_temps[kSlots];
MapSlot g_maps[kSlots];
std::atomic<bool> g_claim_temp[kSlots];
std::atomic<bool> g_claim_map[kSlots];

void copy_path(char* dst, const char* src) {
  std::strncpy(dst, src, kPath - 1);
  dst[kPath - 1] = '\0';
}

void remove_temporaries() {  // async-signal-safe: unlink only
  for (auto& s : g_temps)
    if (s.used.load(std::memory_order_acquire)) ::unlink(s.path);
}

void say(const char* s) {
  const ssize_t n = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)n;
}

void on_stop(int sig) {
  remove_temporaries();
  _exit(128 + sig);
}

void on_bus(int, siginfo_t* info, void*) {
  const char* addr = static_cast<const char*>(info->si_addr);
  const char* file = nullptr;
  for (auto& m : g_maps)
    if (m.used.load(std::memory_order_acquire) && addr >= m.base && addr < m.base + m.size) file = m.path;
  say("error: ");
  say(file ? file : "an input file");
  say(": the file was truncated or changed while it was being read (bus error reading its mapping); nothing was "
      "written\n");
  remove_temporaries();
  _exit(2);
}

}  // namespace

namespace {

// The first free slot of `claims`, now taken; -1 when all are.
int claim_slot(std::atomic<bool>* claims) {
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (claims[i].compare_exchange_strong(expected, true)) return i;
  }
  return -1;
}

template <typename Slot>
void release_slot(Slot* slots, std::atomic<bool>* claims, int slot) {
  if (slot < 0) return;
  slots[slot].used.store(false, std::memory_order_release);
  claims[slot].store(false);
}

}  // namespace

int register_temporary(const char* path) {
  const int i = claim_slot(g_claim_temp);
  if (i < 0) return -1;
  copy_path(g_temps[i].path, path);
  g_temps[i].used.store(true, std::memory_order_release);
  return i;
}

void unregister_temporary(int slot) { release_slot(g_temps, g_claim_temp, slot); }

int register_mapping(const void* base, size_t size, const char* path) {
  const int i = claim_slot(g_claim_map);
  if (i < 0) return -1;
  g_maps[i].base = static_cast<const char*>(base);
  g_maps[i].size = size;
  copy_path(g_maps[i].path, path);
  g_maps[i].used.store(true, std::memory_order_release);
  return i;
}

void unregister_mapping(int slot) { release_slot(g_maps, g_claim_map, slot); }

void install_fault_handlers() {
  struct sigaction stop {};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  for (const int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &stop, nullptr);
  struct sigaction bus {};
  bus.sa_sigaction = on_bus;
  bus.sa_flags = SA_SIGINFO;
  sigemptyset(&bus.sa_mask);
  sigaction(SIGBUS, &bus, nullptr);
}

}  // namespace qz
