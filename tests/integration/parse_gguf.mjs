// Parses a GGUF file with @huggingface/gguf (an independent reader) and prints its counts as JSON.
import {gguf} from "@huggingface/gguf";

const {metadata, tensorInfos} = await gguf(process.argv[2], {allowLocalFile: true});
process.stdout.write(JSON.stringify({
  tensors: tensorInfos.length,
  metadata: Object.keys(metadata).length,
  architecture: metadata["general.architecture"] ?? null,
  names: tensorInfos.map((t) => t.name),
}));
