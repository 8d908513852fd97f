// Replays every file under the given directories through LLVMFuzzerTestOneInput, so corpora
// and past crashes run as ordinary tests in a build without libFuzzer.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
  size_t runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    if (!std::filesystem::exists(argv[i], ec)) continue;
    for (auto &entry : std::filesystem::recursive_directory_iterator(argv[i])) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
      ++runs;
    }
  }
  // Empty input and a few degenerate inputs always run, even with no corpus.
  const uint8_t zeros[64] = {};
  LLVMFuzzerTestOneInput(nullptr, 0);
  for (size_t n = 1; n <= sizeof zeros; ++n) LLVMFuzzerTestOneInput(zeros, n);
  std::printf("replayed %zu corpus inputs\n", runs);
  return 0;
}
