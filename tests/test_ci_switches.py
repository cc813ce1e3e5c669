"""CI's switches (tests/conftest.py, exported by .ci/run) and the session's isolation from the user's home.

Without the switches, missing real data or a oneDNN that cannot be built are clean skips; with them
(JAXSSL_REQUIRE_REAL_DATA=1, JAXSSL_REQUIRE_ONEDNN=1) the run stops before any test in one line saying why (the
compiler's own error for a failed build), and a test that still skips for those reasons fails.
"""

import os
import pathlib
import stat
import subprocess
import sys

import pytest

import conftest
from conftest import REPO

ONEDNN_REASON = conftest.onednn_skip_reason()


def _pytest(args, cwd, **env):
  """A pytest session of its own (the switches act at its start), with ``env`` over this one's variables."""
  return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *args], cwd=cwd,
                        env={**os.environ, **env}, capture_output=True, text=True, timeout=240, check=False)


def test_without_the_switches_missing_pieces_are_clean_skips(monkeypatch):
  for variable in (conftest.REQUIRE_REAL_DATA, conftest.REQUIRE_ONEDNN):
    monkeypatch.setenv(variable, '0')
  monkeypatch.setattr(conftest, 'fashion_mnist_dir', lambda: None)
  monkeypatch.setattr(conftest, 'deepfashion_sample_dir', lambda: None)
  conftest._check_required()  # pylint: disable=protected-access
  assert conftest.ci_failure('real Fashion-MNIST not found: set JAXSSL_FASHION_MNIST_DIR ...') is None
  assert conftest.ci_failure('oneDNN unavailable: no C++ compiler found (set $CXX or install g++)') is None


def test_ci_stops_in_one_line_without_the_real_data(monkeypatch):
  monkeypatch.setenv(conftest.REQUIRE_REAL_DATA, '1')
  monkeypatch.setenv(conftest.REQUIRE_ONEDNN, '0')
  monkeypatch.setattr(conftest, 'deepfashion_sample_dir', lambda: None)
  with pytest.raises(pytest.UsageError) as e:
    conftest._check_required()  # pylint: disable=protected-access
  assert str(e.value) == ('JAXSSL_REQUIRE_REAL_DATA=1 but the DeepFashion attribute sample (set '
                          'JAXSSL_DEEPFASHION_SAMPLE_DIR to the folder holding img/ and split/) not found')
  monkeypatch.setattr(conftest, 'fashion_mnist_dir', lambda: None)
  with pytest.raises(pytest.UsageError, match=r'^JAXSSL_REQUIRE_REAL_DATA=1 but real Fashion-MNIST \(set '
                                              r'JAXSSL_FASHION_MNIST_DIR .*\) and the DeepFashion .* not found$'):
    conftest._check_required()  # pylint: disable=protected-access


def test_under_the_switches_skips_for_want_of_data_or_onednn_fail_and_others_stay_skips(monkeypatch):
  monkeypatch.setenv(conftest.REQUIRE_REAL_DATA, '1')
  monkeypatch.setenv(conftest.REQUIRE_ONEDNN, '1')
  for reason in ('real Fashion-MNIST not found: set JAXSSL_FASHION_MNIST_DIR to the folder of the four .gz files',
                 'the real DeepFashion attribute sample was not found: set JAXSSL_DEEPFASHION_SAMPLE_DIR ...',
                 'oneDNN unavailable: no oneDNN found (looked in ...)',
                 'cannot build oneDNN here: no C++ compiler found (set $CXX or install g++)',
                 'oneDNN has no fast bfloat16 convolutions here (ref:any) although the CPU has AVX512-BF16/AMX'):
    assert conftest.ci_failure(reason).endswith(f'=1 (CI) but this test skipped: {reason}')
  for reason in (f'{conftest.NO_BF16_CPU} (AVX512-BF16 or AMX) for fast bf16 convolutions',  # the hardware's
                 'needs unshare (util-linux) to mount a small tmpfs',
                 'the one-device reference runs in the test process, which sees several devices'):
    assert conftest.ci_failure(reason) is None


def test_a_failed_build_is_told_by_the_compilers_first_error():
  reason = ('compiling onednn_conv.cc failed: g++ -O2 -std=c++17 -shared -fPIC -w -I/x -I/y onednn_conv.cc -o lib.so\n'
            'In file included from onednn_conv.cc:20:\n'
            "onednn_conv.cc:57:3: error: 'dnnl_foo' was not declared in this scope\n"
            "onednn_conv.cc:90:1: error: expected ';' before '}' token\n"
            'compilation terminated.\n')
  assert conftest.one_line(reason) == ("compiling onednn_conv.cc failed: onednn_conv.cc:57:3: error: 'dnnl_foo' was "
                                       'not declared in this scope')
  assert conftest.one_line('no C++ compiler found (set $CXX or install g++)') == \
      'no C++ compiler found (set $CXX or install g++)'


def test_a_compile_error_in_the_onednn_source_stops_ci_in_one_line(tmp_path):
  """End to end: a compiler that fails as g++ does on a broken onednn_conv.cc; the session's own build meets it
  (a new compiler is a new library name, so no cached library is taken) and CI stops before collecting."""
  cxx = tmp_path / 'c++'
  cxx.write_text('#!/bin/sh\n'
                 'if [ "$1" = --version ]; then echo "broken c++ 1.0"; exit 0; fi\n'
                 'echo "In file included from onednn_conv.cc:20:" >&2\n'
                 "echo \"onednn_conv.cc:57:3: error: 'dnnl_foo' was not declared in this scope\" >&2\n"
                 'echo "compilation terminated." >&2\n'
                 'exit 1\n', encoding='utf-8')
  cxx.chmod(cxx.stat().st_mode | stat.S_IXUSR)
  done = _pytest(['--co', 'tests/test_ci_switches.py'], REPO, CXX=str(cxx), JAXSSL_ONEDNN='1',
                 **{conftest.REQUIRE_ONEDNN: '1', conftest.REQUIRE_REAL_DATA: '0'})
  assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
  lines = [l for l in (done.stdout + done.stderr).splitlines() if conftest.REQUIRE_ONEDNN in l]
  if ONEDNN_REASON is None:  # the toolchain is complete here: the broken compiler is the one thing wrong
    assert lines == ['ERROR: JAXSSL_REQUIRE_ONEDNN=1 but oneDNN unavailable: compiling onednn_conv.cc failed: '
                     "onednn_conv.cc:57:3: error: 'dnnl_foo' was not declared in this scope"], done.stderr
  else:
    assert len(lines) == 1 and lines[0].startswith('ERROR: JAXSSL_REQUIRE_ONEDNN=1 but oneDNN unavailable: ')


@pytest.mark.skipif(ONEDNN_REASON is not None, reason=str(ONEDNN_REASON))
def test_a_test_that_skips_for_want_of_onednn_fails_under_the_switch(tmp_path):
  """End to end, through pytest's reports: the skip becomes a failure in one line; a skip for the CPU's lack of
  bf16 instructions, or for anything else, stays a skip; without the switch all are skips."""
  (tmp_path / 'test_skips.py').write_text(
      'import pytest\n\n\n'
      'def test_needs_onednn():\n'
      "  pytest.skip('oneDNN unavailable: simulated')\n\n\n"
      f"@pytest.mark.skipif(True, reason='{conftest.NO_BF16_CPU} (simulated)')\n"
      'def test_needs_bf16_cpu():\n'
      '  pass\n\n\n'
      'def test_needs_something_else():\n'
      "  pytest.skip('needs unshare')\n", encoding='utf-8')
  # This conftest as a plugin of a session outside the repository (its own tests/ folder is not there).
  args, env = ['-p', 'conftest', '-rfs', 'test_skips.py'], {'PYTHONPATH': str(REPO / 'tests'),
                                                          conftest.REQUIRE_REAL_DATA: '0'}
  done = _pytest(args, tmp_path, **env, **{conftest.REQUIRE_ONEDNN: '1'})
  assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
  assert 'JAXSSL_REQUIRE_ONEDNN=1 (CI) but this test skipped: oneDNN unavailable: simulated' in \
      done.stdout.splitlines(), done.stdout  # the failure's whole report
  assert 'FAILED test_skips.py::test_needs_onednn' in done.stdout
  assert '1 failed, 2 skipped' in done.stdout, done.stdout
  done = _pytest(args, tmp_path, **env, **{conftest.REQUIRE_ONEDNN: '0'})
  assert done.returncode == pytest.ExitCode.OK and '3 skipped' in done.stdout, done.stdout + done.stderr


def test_the_session_writes_nothing_to_the_users_home_or_caches():
  """HOME, the XDG caches, TFDS_DATA_DIR and JAXSSL_CACHE_DIR point into the session's temporary folder."""
  home = pathlib.Path(os.environ['HOME'])
  assert home.name == 'home' and home.parent.name.startswith('jaxssl-tests-')
  assert pathlib.Path.home() == home and pathlib.Path('~').expanduser() == home
  for variable in ('XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'TFDS_DATA_DIR', 'JAXSSL_CACHE_DIR'):
    assert pathlib.Path(os.environ[variable]).is_relative_to(home.parent), variable
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  assert onednn.cache_dir() == pathlib.Path(os.environ['JAXSSL_CACHE_DIR'])
