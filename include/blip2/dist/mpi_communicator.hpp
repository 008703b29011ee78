// blip2/dist/mpi_communicator.hpp: the communicator concept (dist/communicator.hpp) on MPI, the optional
// part blip2::mpi (find_package(blip2 COMPONENTS mpi); Debian: libopenmpi-dev + openmpi-bin).
//
//   int main(int argc, char** argv) {
//     blip2::mpi_session mpi(argc, argv);      // MPI_Init_thread / MPI_Finalize, once per process
//     blip2::mpi_communicator comm;            // a duplicate of MPI_COMM_WORLD
//     ... stage1_step(be, comm, ...); average_gradients(comm, model.gradients()); ...
//   }
//
// Errors: the communicator's MPI_Comm returns errors (MPI_ERRORS_RETURN) and every call throws
// communication_error with MPI's message and the operation's name and sizes. A rank that fails while the
// others wait in a collective cannot be recovered by MPI; a program ends the whole job then with
// mpi_session::abort (MPI_Abort), so that the other ranks are killed rather than left waiting. A rank that
// dies (a signal, exit without MPI_Finalize) makes Open MPI's mpirun kill the job itself and name the rank.
// The library never aborts by itself: mpi_session::abort is the program's decision.
//
// Threads: MPI is called from the thread that created the communicator only (MPI_THREAD_FUNNELED); the
// OpenMP threads of the kernels never call it.
//
// Counts: MPI counts are int. all_reduce_sum and broadcast split larger buffers into chunks; the gathers and
// all_to_all_v refuse a block of more than INT_MAX elements.
//
// stats() counts, per operation kind, the calls, the payload bytes this rank handed to MPI (its buffer for
// an all-reduce or a broadcast from it, its block for a gather, what it sends to others in all_to_all_v, the
// whole input of a reduce-scatter) and the seconds it spent inside MPI (wall clock, waiting included): the
// benchmarks read them. What travels on the wire depends on MPI's algorithm (a ring all-reduce sends
// 2 (W-1)/W of the buffer).
#pragma once
// MPI's C API only: the deprecated C++ bindings (removed in MPI 3.0) are not used, and their header warns
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "blip2/dist/communicator.hpp"

namespace blip2 {

// MPI_Init_thread(FUNNELED) on construction (unless MPI is already initialised), MPI_Finalize on
// destruction (if it initialised MPI).
class mpi_session {
 public:
  mpi_session(int& argc, char**& argv) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised) return;
    int provided = 0;
    const int rc = MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    BLIP2_CHECK(rc == MPI_SUCCESS, communication_error, "mpi_session: MPI_Init_thread failed (code ", rc, ")");
    owner_ = true;
  }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;
  ~mpi_session() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (owner_ && !finalised) MPI_Finalize();
  }
  // Ends every rank of the job with `code` (MPI_Abort on MPI_COMM_WORLD): for a rank that failed while the
  // others may be waiting for it in a collective.
  [[noreturn]] static void abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; if it did, do not leave this rank running
  }
  // Whether this process was started by mpirun / mpiexec (Open MPI, MPICH / Hydra, PMIx, Slurm's srun):
  // programs then use MPI, and stay one process without it (no MPI_Init).
  static bool launched_by_mpirun() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
      if (std::getenv(v) != nullptr) return true;
    return false;
  }

 private:
  bool owner_ = false;
};

// What a communicator has done (per operation kind): calls, payload bytes, seconds inside MPI.
struct comm_counter {
  std::int64_t calls = 0;
  double bytes_sent = 0, seconds = 0;
};
struct comm_stats {
  comm_counter all_reduce, all_gather, reduce_scatter, all_to_all, broadcast;
  double total_bytes() const {
    return all_reduce.bytes_sent + all_gather.bytes_sent + reduce_scatter.bytes_sent + all_to_all.bytes_sent +
           broadcast.bytes_sent;
  }
  double total_seconds() const {
    return all_reduce.seconds + all_gather.seconds + reduce_scatter.seconds + all_to_all.seconds + broadcast.seconds;
  }
};

namespace detail {
template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
  else static_assert(sizeof(T) == 0, "mpi_communicator: element type not supported (float, double, int32, int64)");
}
}  // namespace detail

class mpi_communicator {
 public:
  static constexpr std::string_view name = "MPI";

  // A duplicate of `comm` (MPI_COMM_WORLD by default), whose errors are returned and thrown.
  explicit mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    BLIP2_CHECK(initialised, communication_error,
                "mpi_communicator: MPI is not initialised; create a blip2::mpi_session(argc, argv) first");
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  mpi_communicator(const mpi_communicator&) = delete;
  mpi_communicator& operator=(const mpi_communicator&) = delete;
  ~mpi_communicator() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (!finalised && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm native() const { return comm_; }
  const comm_stats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

  template <class T>
  void all_reduce_sum(std::span<T> buf) {
    timer t(stats_.all_reduce, static_cast<double>(buf.size_bytes()));
    for (std::size_t at = 0; at < buf.size(); at += chunk) {
      const int n = static_cast<int>(std::min<std::size_t>(chunk, buf.size() - at));
      check(MPI_Allreduce(MPI_IN_PLACE, buf.data() + at, n, detail::mpi_type<T>(), MPI_SUM, comm_), "all_reduce_sum", buf.size());
    }
  }

  template <class T>
  void all_gather(std::span<const T> local, std::span<T> all) {
    detail::check_gather_sizes("all_gather", local.size(), all.size(), size_);
    const int n = block("all_gather", local.size());
    timer t(stats_.all_gather, static_cast<double>(local.size_bytes()));
    const bool in_place = local.data() == all.data() + static_cast<std::size_t>(rank_) * local.size();
    check(MPI_Allgather(in_place ? MPI_IN_PLACE : local.data(), n, detail::mpi_type<T>(), all.data(), n, detail::mpi_type<T>(),
                        comm_),
          "all_gather", local.size());
  }

  template <class T>
  void reduce_scatter_sum(std::span<const T> all, std::span<T> mine) {
    detail::check_gather_sizes("reduce_scatter_sum", mine.size(), all.size(), size_);
    const int n = block("reduce_scatter_sum", mine.size());
    timer t(stats_.reduce_scatter, static_cast<double>(all.size_bytes()));
    check(MPI_Reduce_scatter_block(all.data(), mine.data(), n, detail::mpi_type<T>(), MPI_SUM, comm_), "reduce_scatter_sum",
          mine.size());
  }

  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const std::size_t> send_counts, std::span<T> recv,
                    std::span<const std::size_t> recv_counts) {
    detail::check_counts("all_to_all_v", "send_counts", send_counts, send.size(), size_);
    detail::check_counts("all_to_all_v", "recv_counts", recv_counts, recv.size(), size_);
    const std::size_t W = static_cast<std::size_t>(size_);
    std::vector<int> sc(W), sd(W), rc(W), rd(W);
    std::size_t so = 0, ro = 0;
    for (std::size_t r = 0; r < W; ++r) {
      sc[r] = block("all_to_all_v", send_counts[r]), sd[r] = block("all_to_all_v", so);
      rc[r] = block("all_to_all_v", recv_counts[r]), rd[r] = block("all_to_all_v", ro);
      so += send_counts[r], ro += recv_counts[r];
    }
    timer t(stats_.all_to_all,
            static_cast<double>((send.size() - send_counts[static_cast<std::size_t>(rank_)]) * sizeof(T)));
    check(MPI_Alltoallv(send.data(), sc.data(), sd.data(), detail::mpi_type<T>(), recv.data(), rc.data(), rd.data(),
                        detail::mpi_type<T>(), comm_),
          "all_to_all_v", send.size());
  }

  template <class T>
  void broadcast(std::span<T> buf, int root) {
    BLIP2_CHECK(root >= 0 && root < size_, value_error, "broadcast: root ", root, " is not a rank of ", size_);
    timer t(stats_.broadcast, rank_ == root ? static_cast<double>(buf.size_bytes()) : 0.0);
    for (std::size_t at = 0; at < buf.size(); at += chunk) {
      const int n = static_cast<int>(std::min<std::size_t>(chunk, buf.size() - at));
      check(MPI_Bcast(buf.data() + at, n, detail::mpi_type<T>(), root, comm_), "broadcast", buf.size());
    }
  }

  void barrier() { check(MPI_Barrier(comm_), "barrier"); }

 private:
  static constexpr std::size_t chunk = std::size_t{1} << 30;  // elements per MPI call (< INT_MAX)

  struct timer {  // adds one call, its bytes and its seconds to a counter
    comm_counter& c;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    timer(comm_counter& counter, double bytes) : c(counter) {
      ++c.calls;
      c.bytes_sent += bytes;
    }
    ~timer() { c.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  };

  static int block(const char* op, std::size_t n) {
    BLIP2_CHECK(n <= static_cast<std::size_t>(INT_MAX), value_error, op, ": ", n,
                " elements in one block; MPI counts stop at INT_MAX (", INT_MAX, ")");
    return static_cast<int>(n);
  }

  void check(int rc, const char* op, std::size_t elements = 0) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    detail::raise<communication_error>("mpi_communicator: ", op, " failed on rank ", rank_, " of ", size_, " (",
                                       elements, " elements): ", std::string(text, static_cast<std::size_t>(len)));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  comm_stats stats_;
};
static_assert(communicator<mpi_communicator>);

}  // namespace blip2
