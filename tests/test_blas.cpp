// core/blas: the blocked, thread-spread Cholesky and triangular inverse against LAPACK's and against their
// definitions, and the same bits for any thread count.
#include "qz/core/blas.hpp"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <random>
#include <vector>

namespace qz {
namespace {

// A random symmetric positive definite n x n matrix (column-major).
Eigen::MatrixXd spd(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  Eigen::MatrixXd B(n, n / 2 + 3);
  for (Eigen::Index i = 0; i < B.size(); ++i) B(i) = g(rng);
  Eigen::MatrixXd A = B * B.transpose() / static_cast<double>(B.cols());
  A.diagonal().array() += 0.05;
  return A;
}

constexpr int kN = 600;  // two full blocks of 256 and a partial one

TEST(Blas, BlockedCholeskyIsLapacksFactorForAnyThreadCount) {
  const Eigen::MatrixXd A = spd(kN, 1);
  Eigen::MatrixXd ref = A;
  ASSERT_EQ(lapack_dpotrf_upper(kN, ref.data(), kN), 0);
  std::vector<Eigen::MatrixXd> ours;
  for (unsigned threads : {1u, 2u, 3u}) {
    Eigen::MatrixXd a = A;
    ASSERT_EQ(parallel_dpotrf_upper(kN, a.data(), kN, threads), 0);
    ours.push_back(a.triangularView<Eigen::Upper>());
  }
  EXPECT_EQ(ours[0], ours[1]);  // bit for bit
  EXPECT_EQ(ours[0], ours[2]);
  const Eigen::MatrixXd V = ours[0];
  EXPECT_LT((V.transpose() * V - A).cwiseAbs().maxCoeff(), 1e-12 * A.cwiseAbs().maxCoeff());
  const Eigen::MatrixXd Vref = ref.triangularView<Eigen::Upper>();
  EXPECT_LT((V - Vref).cwiseAbs().maxCoeff(), 1e-10 * Vref.cwiseAbs().maxCoeff());
}

TEST(Blas, BlockedCholeskyReportsTheFirstMinorThatIsNotPositive) {
  // The leading 399 x 399 block is positive definite, the 400th pivot is not: info 400, as LAPACK says it.
  Eigen::MatrixXd A = spd(kN, 2);
  A(399, 399) = -1.0;
  Eigen::MatrixXd ref = A, a = A;
  const int lapack = lapack_dpotrf_upper(kN, ref.data(), kN);
  EXPECT_EQ(lapack, 400);
  EXPECT_EQ(parallel_dpotrf_upper(kN, a.data(), kN, 2), lapack);
}

TEST(Blas, BlockedTriangularInverseIsTheInverseForAnyThreadCount) {
  Eigen::MatrixXd A = spd(kN, 3);
  ASSERT_EQ(lapack_dpotrf_upper(kN, A.data(), kN), 0);
  const Eigen::MatrixXf V = A.triangularView<Eigen::Upper>().toDenseMatrix().cast<float>();
  std::vector<Eigen::MatrixXf> ours;
  for (unsigned threads : {1u, 2u, 3u}) {
    Eigen::MatrixXf x = Eigen::MatrixXf::Constant(kN, kN, 7.0f);  // the lower part must come back zero
    ASSERT_EQ(parallel_strtri_upper(kN, V.data(), kN, x.data(), kN, threads), 0);
    ours.push_back(x);
  }
  EXPECT_EQ(ours[0], ours[1]);
  EXPECT_EQ(ours[0], ours[2]);
  const Eigen::MatrixXf& X = ours[0];
  EXPECT_EQ(X.triangularView<Eigen::StrictlyLower>().toDenseMatrix().cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_LT((V.cast<double>() * X.cast<double>() - Eigen::MatrixXd::Identity(kN, kN)).cwiseAbs().maxCoeff(), 1e-3);
  Eigen::MatrixXf ref = V;
  ASSERT_EQ(lapack_strtri_upper(kN, ref.data(), kN), 0);
  EXPECT_LT((X - ref).cwiseAbs().maxCoeff(), 1e-4f * ref.cwiseAbs().maxCoeff());
}

TEST(Blas, TriangularInverseOfASingularTriangleSaysWhere) {
  Eigen::MatrixXf V = Eigen::MatrixXf::Identity(kN, kN);
  V(300, 300) = 0.0f;
  Eigen::MatrixXf x(kN, kN);
  EXPECT_EQ(parallel_strtri_upper(kN, V.data(), kN, x.data(), kN, 2), 301);
}

}  // namespace
}  // namespace qz
