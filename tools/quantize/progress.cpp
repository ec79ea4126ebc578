#include "progress.hpp"

#include <fmt/format.h>

namespace qz::cli {

void ConsoleProgress::begin_tensor(size_t index, size_t count, const TensorPlan& t) {
  const int width = static_cast<int>(std::to_string(count).size());
  prefix_ = fmt::format("[{:>{}}/{}] {:<44} {:<16}", index + 1, width, count, t.name, t.format->name());
  if (!quiet_ && tty_) draw(0.0);
}

void ConsoleProgress::advance(double fraction) {
  if (quiet_ || !tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(50) && fraction < 1.0) return;
  last_draw_ = now;
  draw(fraction);
}

void ConsoleProgress::draw(double fraction) {
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(fraction * kWidth);
  fmt::print(out_, "\r{} [{}{}] {:3.0f}%", prefix_, std::string(static_cast<size_t>(filled), '#'),
             std::string(static_cast<size_t>(kWidth - filled), '.'), fraction * 100.0);
  std::fflush(out_);
}

void ConsoleProgress::end_tensor(const TensorReport& r) {
  if (quiet_) return;
  const auto sqnr = r.error.sqnr_db();
  const std::string quality = sqnr ? fmt::format("SQNR {:5.1f} dB", *sqnr) : std::string("lossless     ");
  std::string extra = r.fallback ? "  (fallback)" : "";
  if (r.gptq) {
    extra += fmt::format("  gptq out-err {:.2e}", r.gptq->output_rel_error);
    if (r.gptq->rtn_output_rel_error) extra += fmt::format(" (rtn {:.2e})", *r.gptq->rtn_output_rel_error);
  }
  fmt::print(out_, "{}{} {:5.2f} bpw  {}  rmse {:.3g}  {:.3f} s{}\n", tty_ ? "\r\033[K" : "", prefix_,
             r.bits_per_weight, quality, r.error.rmse(), r.seconds, extra);
  std::fflush(out_);
}

}  // namespace qz::cli
