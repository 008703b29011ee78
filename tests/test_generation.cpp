// test_generation: text generation (include/blip2/generate/) against Hugging Face's semantics.
//
// - tests/fixtures/generation/cases.txt, written by make_generation_fixtures.py with the float64 reference
//   hf_generation.py (greedy, beam search >= 4.36, sampling with the library's Philox stream) on a toy
//   model whose twin is below: every returned id and EOS flag must be identical, every score equal to
//   1e-12 relative (both sides compute the same double formula from the same float logits), and the
//   number of model steps (appends) the same, which pins when rows and beams stop.
// - top-p and top-k masks against the reference's on 240 score vectors (ties and -inf entries included).
// - the sampler's empirical frequencies against the renormalised nucleus distribution: with N draws a count
//   is Binomial(N, p), so |freq - p| <= 5 sqrt(p (1 - p) / N) (a false failure has probability below 1e-6
//   per token for a random seed; the seed is fixed, so the test is deterministic anyway); tokens outside
//   the nucleus are never drawn. Draws depend on (seed, step, row) only.
// - the processors by hand, the model protocol (select/append calls), every error the headers promise.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "blip2/generate/generate.hpp"

using namespace blip2;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// ---- the toy model: the twin of make_generation_fixtures.py's ToyModel (keep them equal) ----
constexpr std::uint64_t mix(std::uint64_t x) {
  std::uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct toy_model {
  struct row_state {
    index_t origin;
    std::uint64_t h;
    std::int64_t n;
  };
  index_t V;
  std::uint64_t seed;
  std::int32_t eos;
  std::int64_t slope;
  std::vector<std::int64_t> base;
  std::int64_t levels;  // > 0: the table takes this many values and there is no row bias (ties)
  bool memory;          // false: appending ignores the token (logits depend on (row, n) only)
  std::vector<row_state> state;
  std::vector<float> values;  // (rows, V)
  // what generation did to it
  index_t appends = 0;
  std::vector<index_t> select_sizes;

  toy_model(index_t v, std::uint64_t s, std::int32_t e, std::int64_t sl, std::vector<std::int64_t> b, std::int64_t lv = 0,
            bool mem = true)
      : V(v), seed(s), eos(e), slope(sl), base(std::move(b)), levels(lv), memory(mem) {
    for (index_t r = 0; r < static_cast<index_t>(base.size()); ++r)
      state.push_back({r, mix(seed * 1000003ull + static_cast<std::uint64_t>(r)), 0});
    refresh();
  }
  void refresh() {
    values.resize(state.size() * static_cast<std::size_t>(V));
    for (std::size_t r = 0; r < state.size(); ++r) {
      const row_state& s = state[r];
      for (index_t v = 0; v < V; ++v) {
        const auto uv = static_cast<std::uint64_t>(v);
        const std::uint64_t table = mix(s.h ^ (uv * 0x9E3779B97F4A7C15ull)) >> 40;
        std::int64_t L = 0;
        if (levels > 0) {
          L = static_cast<std::int64_t>(table % static_cast<std::uint64_t>(levels)) * (24576 / (levels - 1)) - 12288;
        } else {
          L = static_cast<std::int64_t>(table % 24577) - 12288;
          L += static_cast<std::int64_t>(
                   (mix(seed * 0x2545F4914F6CDD1Dull + static_cast<std::uint64_t>(s.origin) * 131u + uv) >> 40) % 8193) - 4096;
        }
        if (v == eos) L += base[static_cast<std::size_t>(s.origin)] + slope * s.n;
        values[r * static_cast<std::size_t>(V) + static_cast<std::size_t>(v)] = static_cast<float>(L) / 4096.0f;
      }
    }
  }
  index_t vocab_size() const { return V; }
  index_t rows() const { return static_cast<index_t>(state.size()); }
  tensor_view<const float, 2> logits() const { return {values.data(), {rows(), V}}; }
  void select(std::span<const index_t> src) {
    std::vector<row_state> next;
    for (index_t s : src) next.push_back(state.at(static_cast<std::size_t>(s)));
    state = std::move(next);
    select_sizes.push_back(static_cast<index_t>(src.size()));
    refresh();
  }
  void append(std::span<const std::int32_t> tokens) {
    REQUIRE(static_cast<index_t>(tokens.size()) == rows());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      REQUIRE((tokens[i] >= 0 && tokens[i] < V));
      const std::uint64_t t = memory ? static_cast<std::uint64_t>(tokens[i]) + 1 : 1;
      state[i].h = mix(state[i].h ^ (t * 0x100000001B3ull));
      state[i].n += 1;
    }
    ++appends;
    refresh();
  }
};

static_assert(decoding_model<toy_model>);
struct not_a_model {
  index_t vocab_size() const { return 1; }
  index_t rows() const { return 1; }
  tensor_view<const float, 2> logits() const { return {}; }
  void select(std::span<const index_t>) {}
};
static_assert(!decoding_model<not_a_model>);  // no append

// Every row the same logits (tests of the sampler's distribution and of the processors' effect).
struct constant_model {
  index_t V, R;
  std::vector<float> row, values;
  index_t appends = 0;
  constant_model(std::vector<float> r, index_t rows) : V(static_cast<index_t>(r.size())), R(rows), row(std::move(r)) { fill(); }
  void fill() {
    values.clear();
    for (index_t i = 0; i < R; ++i) values.insert(values.end(), row.begin(), row.end());
  }
  index_t vocab_size() const { return V; }
  index_t rows() const { return R; }
  tensor_view<const float, 2> logits() const { return {values.data(), {R, V}}; }
  void select(std::span<const index_t> src) {
    R = static_cast<index_t>(src.size());
    fill();
  }
  void append(std::span<const std::int32_t>) { ++appends; }
};

// ---- the fixture file ----
struct expected_sequence {
  index_t row, j;
  bool eos;
  double score;
  std::vector<std::int32_t> ids;
};
struct generation_case {
  std::string name;
  index_t V = 0;
  std::uint64_t seed = 0;
  std::int32_t boosted = 0;  // the token whose logit grows with n (the EOS of most cases)
  std::int64_t slope = 0;
  std::int64_t levels = 0;
  int memory = 1;
  std::vector<std::int64_t> base;
  generation_options options;
  index_t calls = 0;
  std::vector<expected_sequence> expected;
};
struct mask_case {
  std::string kind;  // "topp" or "topk"
  double p = 1.0;
  index_t k = 0;
  std::vector<double> scores;
  std::vector<std::int32_t> keep;
};

double parse_score(const std::string& s) {
  if (s == "-inf") return -inf;
  return static_cast<double>(std::stoll(s)) / 4096.0;
}

void set_option(generation_options& o, const std::string& key, const std::string& value) {
  if (key == "max_new_tokens") o.max_new_tokens = std::stoll(value);
  else if (key == "min_new_tokens") o.min_new_tokens = std::stoll(value);
  else if (key == "num_beams") o.num_beams = std::stoll(value);
  else if (key == "length_penalty") o.length_penalty = std::stod(value);
  else if (key == "repetition_penalty") o.repetition_penalty = std::stod(value);
  else if (key == "do_sample") o.do_sample = value == "1";
  else if (key == "top_k") o.top_k = std::stoll(value);
  else if (key == "top_p") o.top_p = std::stod(value);
  else if (key == "temperature") o.temperature = std::stod(value);
  else if (key == "seed") o.seed = std::stoull(value);
  else if (key == "num_return_sequences") o.num_return_sequences = std::stoll(value);
  else if (key == "eos_token_id") o.eos_token_id = static_cast<std::int32_t>(std::stol(value));
  else if (key == "pad_token_id") o.pad_token_id = static_cast<std::int32_t>(std::stol(value));
  else FAIL("unknown option in the fixture: ", key);
}

struct fixture {
  std::vector<generation_case> cases;
  std::vector<mask_case> masks;
};

const fixture& load_fixture() {
  static const fixture f = [] {
    fixture out;
    const std::string path = std::string(BLIP2_FIXTURE_DIR) + "/generation/cases.txt";
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot open ", path, " (python3 tests/fixtures/make_generation_fixtures.py writes it)");
    std::string line;
    generation_case* c = nullptr;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ls(line);
      std::string tag;
      ls >> tag;
      if (tag == "case") {
        out.cases.emplace_back();
        c = &out.cases.back();
        ls >> c->name;
      } else if (tag == "model") {
        std::size_t B = 0;
        ls >> c->V >> c->seed >> c->boosted >> c->slope >> c->levels >> c->memory >> B;
        c->base.resize(B);
        for (auto& x : c->base) ls >> x;
      } else if (tag == "options") {
        std::string k, v;
        while (ls >> k >> v) set_option(c->options, k, v);
        ls.clear();  // the loop ends on the line's end
      } else if (tag == "calls") {
        ls >> c->calls;
      } else if (tag == "seq") {
        expected_sequence e;
        int eos = 0;
        std::size_t n = 0;
        ls >> e.row >> e.j >> eos >> e.score >> n;
        e.eos = eos != 0;
        e.ids.resize(n);
        for (auto& x : e.ids) ls >> x;
        c->expected.push_back(std::move(e));
      } else if (tag == "end") {
        c = nullptr;
      } else if (tag == "topp" || tag == "topk") {
        mask_case m;
        m.kind = tag;
        if (tag == "topp") ls >> m.p;
        else ls >> m.k;
        std::size_t V = 0, n = 0;
        ls >> V;
        m.scores.resize(V);
        for (auto& x : m.scores) {
          std::string s;
          ls >> s;
          x = parse_score(s);
        }
        std::string keep;
        ls >> keep >> n;
        m.keep.resize(n);
        for (auto& x : m.keep) ls >> x;
        out.masks.push_back(std::move(m));
      } else {
        FAIL("unknown line in the fixture: ", line);
      }
      REQUIRE_MESSAGE(!ls.fail(), "bad fixture line: ", line);
    }
    return out;
  }();
  return f;
}

toy_model make_model(const generation_case& c) {
  return toy_model(c.V, c.seed, c.boosted, c.slope, c.base, c.levels, c.memory != 0);
}

// The first difference between a result and the fixture, or "" (also used on perturbed copies to show
// that the comparison can fail).
std::string compare(const std::vector<generated_sequence>& got, const generation_case& c) {
  std::ostringstream os;
  if (got.size() != c.expected.size()) {
    os << "returned " << got.size() << " sequences, expected " << c.expected.size();
    return os.str();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& e = c.expected[i];
    if (got[i].ids != e.ids || got[i].ended_with_eos != e.eos) {
      os << "row " << e.row << " sequence " << e.j << ": ids/eos differ (got " << got[i].ids.size() << " ids, eos "
         << got[i].ended_with_eos << "; expected " << e.ids.size() << " ids, eos " << e.eos << ")";
      return os.str();
    }
    if (!(std::abs(got[i].score - e.score) <= 1e-12 * std::max(1.0, std::abs(e.score)))) {
      os.precision(17);
      os << "row " << e.row << " sequence " << e.j << ": score " << got[i].score << ", expected " << e.score;
      return os.str();
    }
  }
  return "";
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("generate matches Hugging Face's semantics (hf_generation.py) on the toy model") {
  const fixture& f = load_fixture();
  REQUIRE(f.cases.size() >= 20);
  std::set<std::string> kinds;
  for (const generation_case& c : f.cases) {
    CAPTURE(c.name);
    toy_model model = make_model(c);
    const std::vector<generated_sequence> got = generate(model, c.options);
    CHECK_MESSAGE(compare(got, c) == "", c.name, ": ", compare(got, c));
    CHECK(model.appends == c.calls);
    if (c.options.do_sample) kinds.insert("sample");
    else if (c.options.num_beams == 1) kinds.insert("greedy");
    else kinds.insert("beam");
    // the model protocol: greedy never selects; beam search selects before every append, the first time
    // from the B prompt rows straight to B K beams; sampling expands once, only for several sequences
    const auto B = static_cast<index_t>(c.base.size());
    if (!c.options.do_sample && c.options.num_beams == 1) {
      CHECK(model.select_sizes.empty());
    } else if (!c.options.do_sample) {
      CHECK(static_cast<index_t>(model.select_sizes.size()) <= c.calls);
      for (index_t s : model.select_sizes) CHECK(s == B * c.options.num_beams);
      if (c.calls > 0) CHECK(model.select_sizes.size() >= 1);
    } else {
      CHECK(model.select_sizes.size() == (c.options.num_return_sequences > 1 && c.calls > 0 ? 1u : 0u));
    }
  }
  CHECK(kinds.size() == 3);
}

TEST_CASE("the fixture comparison fails on a perturbed result (the checks can fail)") {
  const fixture& f = load_fixture();
  const generation_case* beam = nullptr;
  for (const auto& c : f.cases)
    if (c.name == "beam5_caption_like") beam = &c;
  REQUIRE(beam != nullptr);
  toy_model model = make_model(*beam);
  std::vector<generated_sequence> got = generate(model, beam->options);
  REQUIRE(compare(got, *beam) == "");
  // the length without the EOS (HF before 4.36) rescales a finished hypothesis' score: a mismatch
  for (auto& s : got)
    if (s.ended_with_eos) {
      const auto len = static_cast<double>(s.ids.size());
      s.score = s.score * (len + 1) / len;
      break;
    }
  CHECK(compare(got, *beam) != "");
  got = generate(model = make_model(*beam), beam->options);
  got[0].ended_with_eos = !got[0].ended_with_eos;
  CHECK(compare(got, *beam) != "");
  got = generate(model = make_model(*beam), beam->options);
  got.back().ids.push_back(0);
  CHECK(compare(got, *beam) != "");
}

TEST_CASE("beam search and greedy search called directly equal generate(); num_beams 1 is greedy") {
  const fixture& f = load_fixture();
  for (const generation_case& c : f.cases) {
    if (c.options.do_sample) continue;
    CAPTURE(c.name);
    toy_model model = make_model(c);
    const auto got = c.options.num_beams == 1 ? greedy_search(model, c.options) : beam_search(model, c.options);
    CHECK(compare(got, c) == "");
  }
}

TEST_CASE("top-p and top-k masks equal the reference's (ties and -inf entries included)") {
  const fixture& f = load_fixture();
  REQUIRE(f.masks.size() >= 400);
  std::size_t checked = 0;
  for (const mask_case& m : f.masks) {
    std::vector<double> s = m.scores;
    if (m.kind == "topp") {
      std::vector<scored_token> scratch(s.size());
      apply_top_p(s, m.p, scratch);
    } else {
      std::vector<double> scratch(s.size());
      apply_top_k(s, m.k, scratch);
    }
    std::vector<std::int32_t> keep;
    for (std::size_t v = 0; v < s.size(); ++v)
      if (s[v] > -inf) {
        keep.push_back(static_cast<std::int32_t>(v));
        CHECK(s[v] == m.scores[v]);  // kept scores are unchanged
      }
    CAPTURE(m.kind);
    CAPTURE(m.p);
    CAPTURE(m.k);
    CHECK(keep == m.keep);
    ++checked;
  }
  CHECK(checked == f.masks.size());
}

TEST_CASE("processors by hand: repetition penalty once per distinct token, min new tokens, temperature") {
  std::vector<double> s{2.0, -1.0, 0.5, -3.0, 4.0};
  std::vector<double> gathered(8);
  const std::vector<std::int32_t> generated{0, 1, 0, 3, 0};  // token 0 three times: penalised once
  apply_repetition_penalty(s, generated, 2.0, gathered);
  CHECK(s == std::vector<double>{1.0, -2.0, 0.5, -6.0, 4.0});
  apply_min_new_tokens(s, 2, 3, 4);
  CHECK(s[4] == -inf);
  s[4] = 4.0;
  apply_min_new_tokens(s, 3, 3, 4);  // enough tokens: the EOS stays
  CHECK(s[4] == 4.0);
  apply_min_new_tokens(s, 0, 3, -1);  // no EOS: nothing
  CHECK(s[4] == 4.0);
  apply_temperature(s, 0.5);
  CHECK(s == std::vector<double>{2.0, -4.0, 1.0, -12.0, 8.0});
  // log_softmax sums to one, and log_probability agrees with it
  std::vector<double> lp{1.0, 2.0, 3.0, -inf};
  const double p2 = log_probability(lp, 2);
  log_softmax_in_place(lp);
  CHECK(std::exp(lp[0]) + std::exp(lp[1]) + std::exp(lp[2]) == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(lp[3] == -inf);
  CHECK(lp[2] == p2);
  // top-k keeps the ties of the k-th score
  std::vector<double> t{1.0, 3.0, 2.0, 3.0, 2.0};
  std::vector<double> scratch(5);
  apply_top_k(t, 2, scratch);
  CHECK(t == std::vector<double>{-inf, 3.0, -inf, 3.0, -inf});
  t = {1.0, 3.0, 2.0, 3.0, 2.0};
  apply_top_k(t, 3, scratch);
  CHECK(t == std::vector<double>{-inf, 3.0, 2.0, 3.0, 2.0});
  // top-p: probabilities 0.5, 0.25, 0.125, 0.125 (descending): p = 0.7 keeps the first two
  std::vector<double> q{std::log(0.125), std::log(0.5), std::log(0.125), std::log(0.25)};
  std::vector<scored_token> ts(4);
  apply_top_p(q, 0.7, ts);
  CHECK(q[0] == -inf);
  CHECK(q[2] == -inf);
  CHECK(q[1] > -inf);
  CHECK(q[3] > -inf);
}

TEST_CASE("the repetition penalty and min_new_tokens change greedy output, as the fixture says") {
  // (the fixture's greedy_repetition_1.3 and greedy_min_new_3 differ from the same model without them)
  const fixture& f = load_fixture();
  for (const auto& c : f.cases) {
    if (c.name != "greedy_repetition_1.3" && c.name != "greedy_min_new_3") continue;
    generation_options plain = c.options;
    plain.repetition_penalty = 1.0;
    plain.min_new_tokens = 0;
    toy_model model = make_model(c);
    CHECK(compare(generate(model, plain), c) != "");
  }
}

TEST_CASE("sampling: empirical frequencies match the renormalised nucleus (temperature, top-p)") {
  // V = 10 logits; temperature 0.7 then top_p 0.8. The expected nucleus is computed here independently:
  // descending order, a token is kept while the mass strictly before it is < top_p (equivalent to HF's
  // ascending "cumulative <= 1 - top_p is dropped" away from the boundary, which this vector avoids).
  const std::vector<float> logits{0.3f, 1.9f, -0.4f, 1.2f, 2.4f, 0.0f, -2.0f, 1.5f, 0.8f, -1.0f};
  const double T = 0.7, top_p = 0.8;
  const index_t V = 10, N = 40000;
  std::vector<double> p(V);
  for (index_t v = 0; v < V; ++v) p[static_cast<std::size_t>(v)] = std::exp(logits[static_cast<std::size_t>(v)] / T);
  const double z = std::accumulate(p.begin(), p.end(), 0.0);
  for (auto& x : p) x /= z;
  std::vector<index_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](index_t a, index_t b) { return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)]; });
  std::vector<double> expected(V, 0.0);
  double before = 0.0, kept_mass = 0.0;
  for (index_t v : order) {
    if (before >= top_p) break;
    REQUIRE(std::abs(before - top_p) > 0.01);  // far from the boundary
    expected[static_cast<std::size_t>(v)] = p[static_cast<std::size_t>(v)];
    kept_mass += p[static_cast<std::size_t>(v)];
    before += p[static_cast<std::size_t>(v)];
  }
  for (auto& x : expected) x /= kept_mass;
  const auto kept = std::count_if(expected.begin(), expected.end(), [](double x) { return x > 0; });
  REQUIRE(kept >= 3);
  REQUIRE(kept < V);

  generation_options o;
  o.do_sample = true;
  o.top_k = 0;
  o.top_p = top_p;
  o.temperature = T;
  o.max_new_tokens = 1;
  o.seed = 20240611;
  constant_model model(logits, N);  // N rows: N independent draws in one step
  const auto out = generate(model, o);
  REQUIRE(static_cast<index_t>(out.size()) == N);
  std::vector<double> count(V, 0.0);
  for (const auto& s : out) {
    REQUIRE(s.ids.size() == 1);
    count[static_cast<std::size_t>(s.ids[0])] += 1;
  }
  for (index_t v = 0; v < V; ++v) {
    const double q = expected[static_cast<std::size_t>(v)];
    const double freq = count[static_cast<std::size_t>(v)] / static_cast<double>(N);
    CAPTURE(v);
    if (q == 0) {
      CHECK(count[static_cast<std::size_t>(v)] == 0);  // outside the nucleus: never drawn
    } else {
      CHECK(std::abs(freq - q) <= 5 * std::sqrt(q * (1 - q) / static_cast<double>(N)));
    }
  }
  // the score is the log-probability of the drawn token under the warped distribution
  for (index_t i = 0; i < 50; ++i) {
    const auto& s = out[static_cast<std::size_t>(i)];
    CHECK(s.score == doctest::Approx(std::log(expected[static_cast<std::size_t>(s.ids[0])])).epsilon(1e-12));
  }
}

TEST_CASE("sampling is a function of (seed, step, row): deterministic, seed-dependent, row-independent") {
  const fixture& f = load_fixture();
  const generation_case* c = nullptr;
  for (const auto& x : f.cases)
    if (x.name == "sample_top_p_0.9") c = &x;
  REQUIRE(c != nullptr);
  toy_model a = make_model(*c), b = make_model(*c);
  const auto ra = generate(a, c->options);
  const auto rb = generate(b, c->options);
  REQUIRE(ra.size() == rb.size());
  for (std::size_t i = 0; i < ra.size(); ++i) {
    CHECK(ra[i].ids == rb[i].ids);
    CHECK(ra[i].score == rb[i].score);
  }
  generation_options other = c->options;
  other.seed += 1;
  toy_model m2 = make_model(*c);
  const auto rc = generate(m2, other);
  bool differs = false;
  for (std::size_t i = 0; i < ra.size(); ++i) differs = differs || ra[i].ids != rc[i].ids;
  CHECK(differs);
  // row 0 alone draws what it drew beside the others
  generation_case single = *c;
  single.base.resize(1);
  toy_model m1 = make_model(single);
  const auto r1 = generate(m1, c->options);
  REQUIRE(r1.size() == 1);
  CHECK(r1[0].ids == ra[0].ids);
  CHECK(r1[0].score == ra[0].score);
}

TEST_CASE("LAVIS presets") {
  const auto cap = lavis_caption_options(50118, 1);
  CHECK(cap.num_beams == 5);
  CHECK(cap.max_new_tokens == 30);
  CHECK(cap.min_new_tokens == 1);
  CHECK(cap.length_penalty == 1.0);
  CHECK(cap.eos_token_id == 50118);
  CHECK(cap.pad_token_id == 1);
  const auto vqa = lavis_vqa_options(50118, 1);
  CHECK(vqa.num_beams == 5);
  CHECK(vqa.max_new_tokens == 10);
  CHECK(vqa.length_penalty == 0.0);
  CHECK_NOTHROW(cap.validate(50272));
  CHECK_NOTHROW(vqa.validate(50272));
}

TEST_CASE("option errors name the field and the fix") {
  auto fails_with = [](generation_options o, const std::string& part) {
    const std::string msg = error_of([&] { o.validate(100); });
    CAPTURE(msg);
    CHECK_THROWS_AS(o.validate(100), value_error);
    CHECK(msg.find(part) != std::string::npos);
  };
  generation_options o;
  o.eos_token_id = 3;
  o.pad_token_id = 1;
  CHECK_NOTHROW(o.validate(100));
  auto with = [&](auto set) {
    generation_options x = o;
    set(x);
    return x;
  };
  fails_with(with([](auto& x) { x.max_new_tokens = 0; }), "max_new_tokens = 0 must be >= 1");
  fails_with(with([](auto& x) { x.min_new_tokens = 21; }), "min_new_tokens = 21 must be in [0, max_new_tokens = 20]");
  fails_with(with([](auto& x) { x.num_beams = 0; }), "num_beams = 0 must be >= 1");
  fails_with(with([](auto& x) { x.num_return_sequences = 2; }), "greedy search");
  fails_with(with([](auto& x) { x.num_beams = 3, x.num_return_sequences = 4; }), "num_return_sequences = 4 must be <= num_beams = 3");
  fails_with(with([](auto& x) { x.do_sample = true, x.num_beams = 5; }), "beam-sample");
  fails_with(with([](auto& x) { x.do_sample = true, x.top_p = 0.0; }), "top_p = 0 must be in (0, 1]");
  fails_with(with([](auto& x) { x.top_p = 1.5; }), "top_p = 1.5 must be in (0, 1]");
  fails_with(with([](auto& x) { x.temperature = 0.0; }), "temperature = 0 must be > 0");
  fails_with(with([](auto& x) { x.temperature = -1.0; }), "temperature = -1 must be > 0");
  fails_with(with([](auto& x) { x.top_k = -1; }), "top_k = -1 must be >= 0");
  fails_with(with([](auto& x) { x.repetition_penalty = 0.0; }), "repetition_penalty = 0 must be > 0");
  fails_with(with([](auto& x) { x.length_penalty = std::nan(""); }), "length_penalty");
  fails_with(with([](auto& x) { x.pad_token_id = -1; }), "needs a pad_token_id");
  fails_with(with([](auto& x) { x.eos_token_id = 100; }), "eos_token_id = 100 is outside the vocabulary [0, 100)");
  fails_with(with([](auto& x) { x.pad_token_id = 100; }), "pad_token_id = 100 is outside the vocabulary");
  // sampling with several sequences and beam search with num_return_sequences <= num_beams are fine
  CHECK_NOTHROW(with([](auto& x) { x.do_sample = true, x.num_return_sequences = 3; }).validate(100));
  CHECK_NOTHROW(with([](auto& x) { x.num_beams = 3, x.num_return_sequences = 3; }).validate(100));
}

TEST_CASE("model errors: wrong logits shape, NaN, all -inf, an algorithm called with the wrong options") {
  generation_options o;
  o.eos_token_id = 3;
  o.pad_token_id = 1;
  o.max_new_tokens = 4;
  {
    struct bad_shape : toy_model {
      using toy_model::toy_model;
      tensor_view<const float, 2> logits() const { return {values.data(), {rows(), V - 1}}; }
    };
    bad_shape m(11, 1, 3, 0, {0, 0});
    CHECK_THROWS_AS(greedy_search(m, o), shape_error);
    const std::string msg = error_of([&] { greedy_search(m, o); });
    CHECK(msg.find("greedy_search: at step 0 the model's logits() has shape (2, 10) but (2, 11) was expected") != std::string::npos);
  }
  {
    constant_model m({0.0f, std::nanf(""), 1.0f, 2.0f}, 1);
    CHECK_THROWS_AS(generate(m, o), value_error);
    const std::string msg = error_of([&] { generate(m, o); });
    CHECK(msg.find("greedy_search: the model's logit of token 1 in row 0 at step 0 is nan") != std::string::npos);
  }
  {
    const float ninf = -std::numeric_limits<float>::infinity();
    constant_model m({ninf, ninf, ninf, ninf}, 2);
    generation_options b = o;
    b.num_beams = 2;
    const std::string msg = error_of([&] { generate(m, b); });
    CHECK(msg.find("beam_search: every logit of row 0 at step 0 is -inf") != std::string::npos);
  }
  {
    toy_model m(11, 1, 3, 0, {0});
    generation_options b = o;
    b.num_beams = 1;
    CHECK(error_of([&] { beam_search(m, b); }).find("num_beams = 1 is greedy search") != std::string::npos);
    b.num_beams = 2;
    CHECK(error_of([&] { greedy_search(m, b); }).find("greedy_search: the options ask for beam search") != std::string::npos);
    CHECK(error_of([&] { sample(m, b); }).find("do_sample = false") != std::string::npos);
  }
}

TEST_CASE("no EOS id: every row runs to max_new_tokens; one-step runs never call the model") {
  toy_model m(17, 4, -1, 0, {0, 0, 0});
  generation_options o;
  o.max_new_tokens = 1;
  o.num_beams = 3;
  const auto out = generate(m, o);
  CHECK(out.size() == 3);
  for (const auto& s : out) {
    CHECK(s.ids.size() == 1);
    CHECK(!s.ended_with_eos);
  }
  CHECK(m.appends == 0);
  CHECK(m.select_sizes.empty());
}
