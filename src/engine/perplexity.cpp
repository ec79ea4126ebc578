#include "qz/engine/perplexity.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "qz/core/error.hpp"

namespace qz {

namespace {

// log softmax of one row of logits, as llama-perplexity: max, sum of expf in double.
std::vector<double> log_softmax(const float* l, size_t n) {
  float mx = l[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, l[i]);
  double z = 0;
  for (size_t i = 0; i < n; ++i) z += std::exp(l[i] - mx);
  const double lz = std::log(z);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(l[i] - mx) - lz;
  return out;
}

size_t argmax(const float* l, size_t n) { return static_cast<size_t>(std::max_element(l, l + n) - l); }

}  // namespace

PerplexityResult perplexity(const Transformer& model, const std::vector<int32_t>& tokens, const PerplexityOptions& o,
                            const Transformer* base, const std::function<void(size_t, size_t, double)>& progress) {
  if (o.ctx < 4) throw UsageError(fmt::format("--ctx {}: use at least 4 tokens", o.ctx));
  if (tokens.size() < 2 * o.ctx)
    throw InputError(fmt::format("the text has {} tokens; perplexity with --ctx {} needs at least {} (two chunks)",
                                 tokens.size(), o.ctx, 2 * o.ctx));
  size_t chunks = tokens.size() / o.ctx;
  if (o.max_chunks) chunks = std::min(chunks, o.max_chunks);
  const size_t first = o.ctx / 2;
  PerplexityResult r;
  r.chunks = chunks;
  double nll = 0, nll2 = 0;
  std::vector<double> kls;
  size_t agree = 0;
  double base_nll = 0;
  const size_t per_pass = std::max<size_t>(1, o.sequences_per_pass);
  for (size_t c0 = 0; c0 < chunks; c0 += per_pass) {
    const size_t nc = std::min(per_pass, chunks - c0);
    std::vector<std::vector<int32_t>> seqs;
    for (size_t c = c0; c < c0 + nc; ++c) {
      std::vector<int32_t> s(tokens.begin() + static_cast<std::ptrdiff_t>(c * o.ctx),
                             tokens.begin() + static_cast<std::ptrdiff_t>((c + 1) * o.ctx));
      if (o.bos) s[0] = *o.bos;
      seqs.push_back(std::move(s));
    }
    const auto logits = model.logits(seqs);
    std::vector<std::vector<float>> base_logits;
    if (base) base_logits = base->logits(seqs);
    for (size_t k = 0; k < nc; ++k) {
      const size_t vocab = logits[k].size() / o.ctx;
      for (size_t j = first; j + 1 < o.ctx; ++j) {
        const float* l = logits[k].data() + j * vocab;
        const int32_t next = tokens[(c0 + k) * o.ctx + j + 1];
        const std::vector<double> lp = log_softmax(l, vocab);
        const double v = -lp[static_cast<size_t>(next)];
        nll += v;
        nll2 += v * v;
        ++r.scored;
        if (base) {
          const float* b = base_logits[k].data() + j * vocab;
          const std::vector<double> lb = log_softmax(b, vocab);
          double kl = 0;
          for (size_t i = 0; i < vocab; ++i) kl += std::exp(lb[i]) * (lb[i] - lp[i]);
          kls.push_back(std::max(0.0, kl));
          base_nll -= lb[static_cast<size_t>(next)];
          agree += argmax(l, vocab) == argmax(b, vocab);
        }
      }
      r.running_ppl.push_back(std::exp(nll / static_cast<double>(r.scored)));
      if (progress) progress(c0 + k + 1, chunks, r.running_ppl.back());
    }
  }
  const double n = static_cast<double>(r.scored);
  const double mean = nll / n, var = nll2 / n - mean * mean;
  r.ppl = std::exp(mean);
  r.ppl_error = n > 1 ? std::sqrt(std::max(0.0, var) / (n - 1)) * r.ppl : 0.0;
  if (base) {
    KlStats s;
    for (const double k : kls) s.mean += k;
    s.mean /= n;
    std::vector<double> sorted = kls;
    std::sort(sorted.begin(), sorted.end());
    s.p99 = sorted[std::min(sorted.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(sorted.size())))];
    s.max = sorted.back();
    s.top1_agreement = static_cast<double>(agree) / n;
    s.base_ppl = std::exp(base_nll / n);
    r.kl = s;
  }
  return r;
}

}  // namespace qz
