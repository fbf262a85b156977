"""Refusals of the build command that an audit of its bad inputs found missing: each is one line,
exit status 2, found before anything is written, and names what is wrong. In-process
(`cli.build_main`), so the cases share one interpreter's imports; the Ray address case uses a
closed port on 127.0.0.1 as the unreachable cluster, and the object-store case a closed port as
the unreachable S3 endpoint (a subprocess: pyarrow's S3 client reads its endpoint once)."""

import json
import os
import subprocess
import sys

import pytest

from ncagen.cli import build_main
from ncagen.storage import redact

SMALL = ["--seq-len", "380", "--rows", "20"]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize("args, words", [
    (["--seed", str(2**64)], "seed must be in 0 .. 2**64 - 1"),
    (["--address", "127.0.0.1:1"], "--address is for Ray"),
    (["--shared-fs"], "--shared-fs is for Ray"),
    (["--device", "cuda:abc"], "cuda:<index>"),
    (["--temperature", "1e-50"], "float32"),
    (["--identity-bias", "1e39"], "identity-bias must be finite in float32"),
    # a negative value in scientific notation is the flag's value (argparse before 3.13 read
    # it as an unknown flag and said "expected one argument")
    (["--identity-bias", "-1e39"], "identity-bias must be finite in float32"),
    (["--temperature", "-2.5E-3"], "temperature must be > 0"),
    (["--band", "-0.1-0.5"], "-0.1-0.5"),
    (["--shard-rows", "0"], "--shard-rows amount '0'"),
    (["--val-rows", "x"], "--val-rows amount 'x'"),
    # numbers past what the kernels' counters, the sim column or a split's files can hold:
    # refused here, not a traceback (or a plan that never ends) later
    (["--burn-in", "99999999999999999999"], "beyond the 1,000,000 a rollout may run"),
    (["--dt", "200000"], "burn-in 10 + dt 200000 x 9, for 10 grids a row"),
    (["--sims-per-rule", str(2**31)], "the sim column is int32"),
    (["--rows", "99999999999999999999"], "more than the 100,000 a split may have: fewer rows"),
    (["--rows", "200001", "--shard-rows", "2"], "100,001 files, more than the 100,000"),
    # edges finer than the 1e-6 that config names and shard keys hold: two such bands were one
    # config, found only after the first write
    (["--band", "0.5-1.0", "--band", "0.5000001-1.0"], "'0.5000001-1.0': give its edges to at most 6"),
    (["--mix", "0.12345674-0.5:1,0.12345671-0.5:1"], "at most 6 decimal places"),
])
def test_bad_flags(tmp_path, capsys, args, words):
    out = tmp_path / "never"
    assert build_main([*SMALL, "--executor", "local", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out (-) would be made here, and seen below
    (tmp_path / "afile").write_text("x")
    cases = [
        ("", "--out is empty"),
        (str(tmp_path / "afile" / "sub"), f"{tmp_path / 'afile'} is not a directory"),
        ("/dev/null", "exists and is not a directory"),
        (str(tmp_path / ("x" * 300)), "longer than the"),
        ("az://container/x", "adlfs"),  # a scheme whose fsspec package is not installed
        ("s3://", "s3:// names no bucket: give s3://BUCKET/PREFIX"),  # it failed at a write
        ("s3:///x", "names no bucket"),  # it asked for s3fs
        ("gs://", "gs:// names no bucket"),  # it retried for 30 s
        ("s3://KEY:Secret@/x", "s3://***@/x names no bucket"),
        ("hf://datasets/org/x", "python -m ncagen.publish DIR"),  # it failed on the network
        ("fsspec+hf://datasets/org/x", "python -m ncagen.publish DIR"),  # pyarrow's own name
        ("fsspec+s3:///x", "names no bucket"),
        ("-", "a build is a directory of files, not a stream"),  # it made a folder named -
        # a query parameter that pyarrow's own S3 / GCS clients do not know: it said "Install
        # s3fs" (the fallback's package), which would not have helped
        ("s3://bucket/x?region=us-east-1&retries=3", "Unexpected query parameter in S3 URI: 'retries'"),
        ("gs://bucket/x?colour=1", "gs://bucket/x?colour=1: Unexpected query parameter in GCS"),
        ("s3://bucket/x?secret_key=Sekrit9&x=1", "s3://bucket/x?secret_key=***&x=1: Unexpected"),
    ]
    for out, words in cases:
        assert build_main([*SMALL, "--executor", "local", "--out", out]) == 2, out
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_bad_environment_variable_is_named_before_anything_is_written(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv("NCAGEN_PROGRESS_SECONDS", "abc")
    assert build_main([*SMALL, "--executor", "local", "--out", str(tmp_path / "o")]) == 2
    assert "NCAGEN_PROGRESS_SECONDS must be a number" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unreachable_ray_address_fails_at_once(tmp_path, capsys):
    """ray.init retries an address nobody answers at for minutes; the build says so at once."""
    out = tmp_path / "never"
    assert build_main([*SMALL, "--address", f"127.0.0.1:{_closed_port()}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers there" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_unreadable_recipes(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "latin.json").write_bytes(b"\xff\xfe{}")
    (tmp_path / "huge.json").write_text(" " * (2 << 20) + "{}")
    (tmp_path / "folder.json").mkdir()
    for name, words in (("deep.json", "nested too deep"), ("latin.json", "not UTF-8"),
                        ("huge.json", "more than a recipe"), ("folder.json", "not a regular file"),
                        ("/dev/zero", "not a regular file")):  # an endless file is never read
        assert build_main(["--recipe", str(tmp_path / name), "--executor", "local",
                           "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert words in err and name in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_damaged_manifest_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    for body, words in (("[]", "is not a JSON object"),
                        ('{"config": {}, "shards": [1]}', "'shards' is not a JSON object"),
                        ('{"config": {}, "shards": {"a": 1}}', "record of shard a is damaged"),
                        ('{"config": {}, "shards": {"a": {"rows": 1}}}', "record of shard a"),
                        ('{"config": {}, "generator": "x"}', "'generator' is not a JSON object"),
                        ("{x", "ncagen.json is not a readable JSON file")):
        out = tmp_path / "d"
        out.mkdir(exist_ok=True)
        (out / "ncagen.json").write_text(body)
        assert build_main([*SMALL, "--executor", "local", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
        assert [p.name for p in out.iterdir()] == ["ncagen.json"]
    assert build_main([*SMALL, "--executor", "local", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "ncagen.json").read_text())["complete"] is True


def test_redact_hides_the_credentials_of_every_url():
    text = "at s3://AKIA:Secret@bkt/y and http://u:p@127.0.0.1:9/x; s3://bkt/z mail a@b.c"
    assert redact(text) == "at s3://***@bkt/y and http://***@127.0.0.1:9/x; s3://bkt/z mail a@b.c"
    # secrets holding / or @ (AWS secret keys often hold /), a key alone, an @ in a path
    assert redact("s3://AKIA:wJal/rXU@bkt/x") == "s3://***@bkt/x"
    assert redact("s3://u:p@ss@bkt/x") == "s3://***@bkt/x"
    assert redact("s3://KEY@bkt/x s3://bkt/a@b") == "s3://***@bkt/x s3://bkt/a@b"
    # secrets in the query string; other parameters stay readable
    assert (redact("s3://bkt/x?region=eu&access_key=AKIA&secret_key=S3CR&session_token=T0K")
            == "s3://bkt/x?region=eu&access_key=***&secret_key=***&session_token=***")
    assert redact("gs://b/p?token=abc#f and s3://b?endpoint_override=h:9") == \
        "gs://b/p?token=***#f and s3://b?endpoint_override=h:9"


def test_two_bands_of_one_config_name_are_refused():
    from ncagen.config import Band, ConfigError
    from ncagen.plan import BuildConfig

    # the Python API takes Band objects without Band.parse's 6 decimals: the names are checked
    with pytest.raises(ConfigError, match="would both be config band_50_100"):
        BuildConfig(out="x", bands=(Band(0.5, 1.0), Band(0.5000001, 1.0)), rows=10)
    assert len(BuildConfig(out="x", bands=(Band(0.5, 1.0), Band(0.500001, 1.0)), rows=10).partitions) == 2


def test_the_bucket_is_read_where_the_url_names_it():
    from ncagen.storage import StorageRefused, bucket, check_bucket

    assert bucket("s3://K:S@bucket/runs/u@/ds") == "bucket"  # an @ in the path is not a secret's
    assert bucket("s3://bucket?endpoint_override=h@/x") == "bucket"
    assert bucket("gs://b/x") == "b" and bucket("s3://K:S@/x") == "" and bucket("s3://?a=b") == ""
    check_bucket("s3://K:S@bucket/runs/u@/ds")  # not refused
    with pytest.raises(StorageRefused, match="names no bucket"):
        check_bucket("s3a://")


def test_an_error_of_a_shards_generation_keeps_its_type(tmp_path):
    """Only the storage's own failures become StorageError: what the caller's block raises
    inside an atomic write (a shard's generation) comes out unchanged."""
    from ncagen.generate import BandUnreachable
    from ncagen.storage import Storage

    store = Storage(str(tmp_path))
    for err in (BandUnreachable("no rule"), ZeroDivisionError("x"), RuntimeError("y"),
                MemoryError()):
        with pytest.raises(type(err)):
            with store.atomic_write("a.bin") as sink:
                sink.write(b"half")
                raise err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_negative_number_with_an_exponent_is_a_value_and_flags_still_are_flags():
    from ncagen.cli import build_parser

    args = build_parser().parse_args(["--out", "o", "--rows", "5", "--identity-bias", "-1e-3",
                                      "--temperature", "2e-2"])
    assert args.identity_bias == pytest.approx(-1e-3) and args.out == "o"
    with pytest.raises(SystemExit):  # a flag is not swallowed as a value
        build_parser().parse_args(["--out", "o", "--identity-bias", "--rows", "5"])


def test_storage_messages_show_the_url_as_given_and_one_errno(monkeypatch):
    import errno

    from pyarrow import fs

    from ncagen.storage import StorageRefused, describe_error, filesystem

    # the retry limit ncagen adds to a gs:// URL stays out of what the user reads
    with pytest.raises(StorageRefused) as caught:
        filesystem("gs://AK:se/cret@b/x")
    assert "retry_limit_seconds" not in str(caught.value) and "cret" not in str(caught.value)
    # an Azure URL without its account is still fsspec's (adlfs reads the account from the
    # environment), not refused by pyarrow's "no valid account name"
    with pytest.raises(StorageRefused, match="adlfs"):
        filesystem("abfs://container/path")

    class Denied:  # pyarrow's S3 client refused at its start (an IOError with an errno)
        @staticmethod
        def from_uri(uri):
            raise OSError(errno.EACCES, "When resolving region: ACCESS_DENIED\nsecond line")

    monkeypatch.setattr(fs, "FileSystem", Denied)
    with pytest.raises(PermissionError) as caught:
        filesystem("s3://b/x")
    assert str(caught.value) == "[Errno 13] When resolving region: ACCESS_DENIED"
    assert describe_error(caught.value, "s3://b/x").count("Errno") == 1


def test_gs_urls_keep_their_options_and_get_a_retry_limit():
    from ncagen.storage import filesystem

    fsys, path = filesystem("gs://bucket/p?endpoint_override=localhost:4443&scheme=http")
    assert path == "bucket/p" and type(fsys).__name__ == "GcsFileSystem"


def test_credentials_in_the_output_url_are_never_printed(tmp_path):
    """An unreachable S3 endpoint (a closed port) stands in for the remote store."""
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIAENV",
           "AWS_SECRET_ACCESS_KEY": "EnvSecret456"}
    res = subprocess.run([sys.executable, "-m", "ncagen.build", *SMALL, "--executor", "local",
                          "--out", "s3://AKIAURLKEY:UrlSecret123@bucket/x"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 1 and "storage unreachable" in res.stderr, res.stderr
    assert "s3://***@bucket/x" in res.stderr
    for secret in ("UrlSecret123", "AKIAURLKEY", "EnvSecret456"):
        assert secret not in res.stderr + res.stdout
