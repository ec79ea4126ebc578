#include "qz/calibration/block_by_block.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"

namespace qz {

std::vector<LinearGroup> linear_groups(uint32_t l) {
  auto names = [l](std::initializer_list<const char*> ns) {
    std::vector<std::string> v;
    for (const char* n : ns) v.push_back(fmt::format("blk.{}.{}.weight", l, n));
    return v;
  };
  return {{l, BlockInput::AttnQkv, names({"attn_q", "attn_k", "attn_v"})},
          {l, BlockInput::AttnOutput, names({"attn_output"})},
          {l, BlockInput::FfnGateUp, names({"ffn_gate", "ffn_up"})},
          {l, BlockInput::FfnDown, names({"ffn_down"})}};
}

const std::vector<float>& group_input(const BlockInputs& seen, BlockInput input) {
  switch (input) {
    case BlockInput::AttnQkv: return seen.attn_qkv;
    case BlockInput::AttnOutput: return seen.attn_output;
    case BlockInput::FfnGateUp: return seen.ffn_gate_up;
    case BlockInput::FfnDown: return seen.ffn_down;
  }
  return seen.attn_qkv;
}

namespace {

// A float vector kept as float32 or as bf16.
struct Kept {
  std::vector<float> f;
  std::vector<uint16_t> b;
  void keep(std::vector<float>&& v, bool bf16) {
    b.clear();
    f.clear();
    if (!bf16) {
      f = std::move(v);
      return;
    }
    b.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = fp32_to_bf16(v[i]);
  }
  std::vector<float> get() const {
    if (b.empty()) return f;
    std::vector<float> v(b.size());
    for (size_t i = 0; i < b.size(); ++i) v[i] = bf16_to_fp32(b[i]);
    return v;
  }
};

}  // namespace

struct BlockByBlock::Batch {
  HiddenStates h;            // x empty while the states are kept as bf16
  std::vector<uint16_t> x16;
  Kept side;                 // within a block: o_proj's input between its stages
  void pack(bool bf16) {
    if (!bf16) return;
    x16.resize(h.x.size());
    for (size_t i = 0; i < h.x.size(); ++i) x16[i] = fp32_to_bf16(h.x[i]);
    h.x = {};
  }
  HiddenStates unpacked() const {
    HiddenStates c = h;
    if (!x16.empty()) {
      c.x.resize(x16.size());
      for (size_t i = 0; i < x16.size(); ++i) c.x[i] = bf16_to_fp32(x16[i]);
    }
    return c;
  }
};

BlockByBlock::BlockByBlock(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows,
                           BlockByBlockOptions opts)
    : model_(model), quantized_(model), float_engine_(model, opts.threads), quantized_engine_(quantized_, opts.threads),
      opts_(opts) {
  if (windows.empty()) throw InputError("no calibration window to run");
  for (size_t i = 0; i < windows.size();) {
    std::vector<std::vector<int32_t>> part;
    size_t n = 0;
    while (i < windows.size() && (part.empty() || n + windows[i].size() <= opts_.batch_tokens)) {
      n += windows[i].size();
      part.push_back(windows[i++]);
    }
    Batch b;
    b.h = float_engine_.embed(part);
    b.pack(opts_.bf16_states);
    batches_.push_back(std::move(b));
    tokens_ += n;
  }
}

BlockByBlock::~BlockByBlock() = default;

uint32_t BlockByBlock::block_count() const { return model_.config().block_count; }

void BlockByBlock::run_next_block(BlockObserver& obs) {
  if (next_ >= block_count()) throw std::logic_error("BlockByBlock: every block has been run");
  const uint32_t l = next_;
  const auto groups = linear_groups(l);
  auto show = [&](const LinearGroup& g, const BlockInputs& seen, size_t rows) {
    const std::vector<float>& x = group_input(seen, g.input);
    obs.observe(g, x.data(), rows, rows ? x.size() / rows : 0);
  };
  auto apply = [&](const LinearGroup& g) {
    for (auto& [name, t] : obs.finish(g)) quantized_.replace(name, std::move(t));
  };
  if (opts_.float_inputs) {
    for (auto& b : batches_) {
      HiddenStates h = b.unpacked();
      BlockInputs seen;
      float_engine_.run_block(l, h, &seen);
      for (const auto& g : groups) show(g, seen, h.rows());
      b.h.x = std::move(h.x);
      b.pack(opts_.bf16_states);
    }
    for (const auto& g : groups) apply(g);
  } else {
    // The block in stages, each group's input computed from the stages before with the weights quantized so far:
    // q/k/v read the normed states; o_proj the attention of quantized q/k/v; gate/up the norm of the states after
    // the quantized attention; down_proj silu(gate) * up of quantized gate/up. About one block run in all.
    const std::string p = fmt::format("blk.{}.", l);
    const Transformer& e = quantized_engine_;
    const OverlayWeights& w = quantized_;
    auto store = [&](Batch& b, std::vector<float>&& x) {
      b.h.x = std::move(x);
      b.pack(opts_.bf16_states);
    };
    for (const auto& b : batches_) {
      const HiddenStates h = b.unpacked();
      const std::vector<float> x = e.attn_norm(l, h);
      obs.observe(groups[0], x.data(), h.rows(), x.size() / h.rows());
    }
    apply(groups[0]);
    {
      const FloatTensor wq = w.get(p + "attn_q.weight"), wk = w.get(p + "attn_k.weight"), wv = w.get(p + "attn_v.weight");
      for (auto& b : batches_) {
        const HiddenStates h = b.unpacked();
        std::vector<float> attn = e.attention_mix(l, h, e.attn_norm(l, h), wq, wk, wv);
        obs.observe(groups[1], attn.data(), h.rows(), attn.size() / h.rows());
        b.side.keep(std::move(attn), opts_.bf16_states);
      }
    }
    apply(groups[1]);
    {
      const FloatTensor wo = w.get(p + "attn_output.weight");
      for (auto& b : batches_) {
        HiddenStates h = b.unpacked();
        const std::vector<float> o = e.project(b.side.get(), h.rows(), wo);
        b.side = {};
        for (size_t k = 0; k < o.size(); ++k) h.x[k] += o[k];
        const std::vector<float> h2 = e.ffn_norm(l, h.x, h.rows());
        obs.observe(groups[2], h2.data(), h.rows(), h2.size() / h.rows());
        store(b, std::move(h.x));  // the states after the quantized attention
      }
    }
    apply(groups[2]);
    const FloatTensor wg = w.get(p + "ffn_gate.weight"), wu = w.get(p + "ffn_up.weight");
    for (const auto& b : batches_) {
      const HiddenStates h = b.unpacked();
      const std::vector<float> act = e.mlp_activation(e.ffn_norm(l, h.x, h.rows()), h.rows(), wg, wu);
      obs.observe(groups[3], act.data(), h.rows(), act.size() / h.rows());
    }
    apply(groups[3]);
    const FloatTensor wd = w.get(p + "ffn_down.weight");
    for (auto& b : batches_) {
      HiddenStates h = b.unpacked();
      const std::vector<float> down = e.mlp(e.ffn_norm(l, h.x, h.rows()), h.rows(), wg, wu, wd);
      for (size_t k = 0; k < down.size(); ++k) h.x[k] += down[k];
      store(b, std::move(h.x));
    }
  }
  // The block is done: its weights are read from the model again if ever needed (the pass never goes back).
  for (const auto& g : groups)
    for (const auto& n : g.weights) quantized_.forget(n);
  ++next_;
}

}  // namespace qz
