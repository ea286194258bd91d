"""Values that reach command lines are data: every grammar checked at load (exit 2 naming the file
and key), one transport check for every URL, `--` before the positional arguments of the tools
the factory starts, and no Dockerfile line from a tag or a label."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from assemble.bases import find_base, load_bases
from assemble.dockerfile import render_dockerfile
from assemble.spec import Settings, image_specs
from wheelfactory.cli.app import cli
from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.core.grammar import check_git_ref, check_git_url, check_tree
from wheelfactory.planning.recipe import load_recipes
from wheelfactory.planning.release import load_release
from wheelfactory.run.runner import Runner
from wheelfactory.sources.fetch import SourceCache
from wheelfactory.sources.kinds import GitSource
from wheelfactory.sources.patches import Patch, apply_patches
from wheelfactory.sources.transport import INDEX_SCHEMES, check_url, normalise
from wheelfactory.toolchain.installer import PipInstaller, UvInstaller

from .conftest import MINIMAL_RELEASE, RECIPES, run_cli

A = "a" * 40
EXTENDS = 'extends = "0.15.0-t4"\n'
NCCL_WHEEL = "nvidia_nccl_cu13-2.29.2-py3-none-manylinux_2_18_aarch64.whl"


@pytest.fixture(scope="module")
def recipes():
    return load_recipes(RECIPES)


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def refused(tmp_path: Path, recipes, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_release(str(p), recipes, RECIPES)
    assert e.value.exit_code == 2
    message = str(e.value)
    assert message.startswith(str(p)), message  # names the file
    return message


# -- release files: each grammar, refused at load -----------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # git sources: never an option, never a helper program, a scheme git speaks
    ('[components.nccl]\nsource = { git = "--upload-pack=touch /tmp/PWNED;", ref = "v1" }\n',
     "[components.nccl].source.git: bad git URL '--upload-pack=touch /tmp/PWNED;': it starts with '-'"),
    ('[components.nccl]\nsource = { git = "ext::sh -c touch% /tmp/PWNED", ref = "v1" }\n',
     "'<transport>::<address>' runs a helper program"),
    ('[components.nccl]\nsource = { git = "ssh://-oProxyCommand=touch%20x/r.git", ref = "v1" }\n',
     "its host starts with '-'"),
    ('[components.nccl]\nsource = { git = "me@-oProxyCommand:r.git", ref = "v1" }\n',
     "its user or host starts with '-'"),
    ('[components.nccl]\nsource = { git = "ftp://example.invalid/r.git", ref = "v1" }\n', "unknown scheme 'ftp'"),
    ('[components.nccl]\nsource = { git = " http://example.invalid/r.git", ref = "v1" }\n',
     "starts or ends with whitespace"),
    ('[components.nccl]\nsource = { git = "HTTP://example.invalid/r.git", ref = "v1" }\n', "over plain http"),
    # git refs: git check-ref-format's rules, and never an option
    ('[components.nccl]\nsource = { git = "https://example.invalid/r.git", ref = "--upload-pack=x" }\n',
     "[components.nccl].source.ref: bad git ref '--upload-pack=x': it starts with '-'"),
    ('[components.nccl]\nsource = { git = "https://example.invalid/r.git", ref = "v1 v2" }\n', "no spaces"),
    ('[components.nccl]\nsource = { git = "https://example.invalid/r.git", ref = "v1..v2" }\n', "no '..'"),
    ('[components.nccl]\nsource = { git = "https://example.invalid/r.git", ref = "heads/x.lock" }\n', ".lock"),
    ('[components.nccl]\nsource = { git = "https://example.invalid/r.git", ref = "v@{1}" }\n', "'@{'"),
    ('[components.nccl]\nsource = { git = "https://example.invalid/r.git", ref = "" }\n', "it is empty"),
    # pin names are written into requirement files: PEP 508 names only
    ('[pins]\n"--extra-index-url http://example.invalid/simple #" = "1.0"\n',
     "[pins]: '--extra-index-url http://example.invalid/simple #' is not a package name"),
    ('[pins]\n"bad name!" = "1.0"\n', "'bad name!' is not a package name"),
    ('[pins]\n"foo bar" = "1.0"\n', "'foo bar' is not a package name"),
    ('[pins]\n"" = "1.0"\n', "'' is not a package name"),
    ('[pins]\n"-r" = "1.0"\n', "'-r' is not a package name"),
    # versions: ASCII, no whitespace, bounded
    ('[pins]\nfoo = " 1.0"\n', "[pins].foo: bad version ' 1.0'"),
    ('[pins]\nfoo = "1.0 "\n', "[pins].foo: bad version '1.0 '"),
    ('[components.nccl]\nversion = "\uff12.29.2-1"\n', "full-width digits are not digits here"),
    ('[components.torch]\nversion = "\uff12.10.0"\n', "full-width digits are not digits here"),
    ('[components.torch]\nversion = "' + "1" * 5000 + '"\n', "(5000 characters): a version has at most 128"),
    # images: OCI grammar, no line of a Dockerfile
    ('[image]\ntag = "x\\nRUN touch /pwned"\n', "contains control character(s) \\n"),
    ('[image]\ntag = "-x"\n', "[image].tag: bad image tag '-x'"),
    ('[image]\ntag = "x y"\n', "[image].tag: bad image tag 'x y'"),
    ('[image]\ntag = "' + "x" * 129 + '"\n', "bad image tag"),
    ('[image]\nrepository = "Bad Repo"\n', "[image].repository: bad image repository 'Bad Repo'"),
    ('[image]\nrepository = "localhost:5000/x"\n', "a registry goes in --registry"),
    # the target: known platforms and CUDA architectures
    ('[target]\nplatform = "win_amd64"\n', "[target].platform: 'win_amd64' is not a platform the factory builds for"),
    ('[target]\nplatform = "linux_riscv64"\n', "expected one of linux_aarch64, linux_x86_64"),
    ('[target]\ncuda_arch_list = ["99.0"]\n', "[target].cuda_arch_list: '99.0' is no CUDA architecture"),
    ('[target]\ncuda_arch_list = ["8.0a"]\n', "'8.0a' is no CUDA architecture"),
    ('[target]\ncuda_arch_list = ["9.0f"]\n', "'9.0f' is no CUDA architecture"),
    ('[target]\ncuda_arch_list = ["\uff11\uff12.1a"]\n', "ASCII digits only"),
    ('[target]\ncuda = "\uff11\uff13.1.0"\n', "[target].cuda: expected a version such as '13.1.0'"),
    ('[target]\npython = "3.\uff11\uff12"\n', "[target].python: expected MAJOR.MINOR such as '3.12'"),
    # environments: shell-identifier keys, values a process environment can hold
    ('[components.nccl.env]\n"A=B" = "x"\n', "[components.nccl].env: 'A=B' is not an environment variable name"),
    ('[components.nccl.env]\n"" = "x"\n', "'' is not an environment variable name"),
    ('[components.nccl.env]\n"1X" = "x"\n', "'1X' is not an environment variable name"),
    ('[components.nccl.env]\nX = "a\\u0000b"\n', "contains control character(s) \\x00"),
    # sources and adopted wheels
    ('[components.nccl]\nsource = { path = "" }\n', "[components.nccl].source.path: empty"),
    ('[components.nccl]\nsource = { url = " http://example.invalid/a.tar.gz", sha256 = "' + "0" * 64 + '" }\n',
     "over plain http"),
    ('[components.nccl]\nsource = { pypi = "--index-url" }\n', "'--index-url' is not a package name"),
    (f'[components.nccl]\nadopt = "http://example.invalid/{NCCL_WHEEL}"\n',
     "[components.nccl].adopt: 'http://example.invalid/" + NCCL_WHEEL + "' is fetched over plain http"),
    (f'[components.nccl]\nadopt = "nvidia-nccl-cu13 @ http://example.invalid/{NCCL_WHEEL}"\n',
     "is fetched over plain http"),
    (f'[components.nccl]\nadopt = "ftp://example.invalid/{NCCL_WHEEL}"\n', "uses ftp://"),
    # control characters anywhere, keys included
    ('description = "\\u001b[2J"\n', "description: '\\x1b[2J' contains control character(s) \\x1b"),
    ('[components.nccl.options]\n"a\\nb" = 1\n', "contains control character(s) \\n"),
])
def test_bad_values_are_refused_at_load_naming_file_and_key(tmp_path, recipes, text, expected):
    assert expected in refused(tmp_path, recipes, EXTENDS + text)


def test_good_values_load(tmp_path, recipes):
    repo = tmp_path / "repos" / "nccl"
    repo.mkdir(parents=True)
    text = EXTENDS + ('description = "two lines\\n\\tand a tab"\n'
                      '[components.nccl]\nsource = { git = "repos/nccl", ref = "release/v2.29.2-1" }\n'
                      '[components.nccl.env]\nNCCL_FLAGS = "a\\nb"\n'
                      '[components.torch]\nsource = { git = "git@github.com:pytorch/pytorch.git", ref = "' + A + '" }\n'
                      '[image]\ntag = "my_tag.1-x"\nrepository = "me/dgx-spark-vllm"\n'
                      '[pins]\n"zope.interface" = "7.2"\n')
    release = load_release(str(write(tmp_path, text)), recipes, RECIPES)
    nccl = release.components["nccl"]
    # a local repository is found beside the release file, as a path source is
    assert isinstance(nccl.source, GitSource) and nccl.source.url == str(repo)
    assert nccl.env["NCCL_FLAGS"] == "a\nb"
    assert release.components["torch"].source.ref == A
    assert release.image["tag"] == "my_tag.1-x" and release.pins["zope.interface"] == "7.2"


def test_a_deep_extends_chain_is_refused_cleanly(tmp_path, recipes):
    write(tmp_path, EXTENDS, "r0.toml")
    for i in range(1, 40):
        write(tmp_path, f'extends = "r{i - 1}"\n', f"r{i}.toml")
    message = refused(tmp_path, recipes, 'extends = "r39"\n')
    assert "the 'extends' chain" in message and "more than 32 releases long" in message


def test_toml_nested_thousands_deep_is_refused_cleanly(tmp_path, recipes):
    message = refused(tmp_path, recipes, "a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested thousands deep" in message


def test_tables_nested_deeper_than_a_release_are_refused(tmp_path, recipes):
    message = refused(tmp_path, recipes, "x = " + "{a = " * 20 + "1" + " }" * 20 + "\n")
    assert "nested more than 16 deep" in message


def test_a_release_path_too_long_for_the_file_system_is_bad_input(tmp_path, recipes):
    with pytest.raises(InputError, match="too long for the file system"):
        load_release(str(tmp_path / ("a" * 300 + ".toml")), recipes, RECIPES)
    with pytest.raises(InputError, match="too long for the file system"):
        load_release("a" * 300, recipes, RECIPES)


# -- the command line -----------------------------------------------------------------------------

def invoke(tmp_path: Path, *args: str):
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c")]
    return CliRunner().invoke(cli, [*common, *args])


@pytest.mark.parametrize("args, expected", [
    (["--index-url", " http://example.invalid/simple", "list"], "is fetched over plain http"),
    (["--index-url", "HTTP://example.invalid/simple", "list"], "is fetched over plain http"),
    (["--index-url", "ftp://example.invalid/simple", "list"], "uses ftp://"),
    (["--index-url", "--extra-index-url", "list"], "is not a URL"),
    (["plan", "--adopt", f"nccl=http://example.invalid/{NCCL_WHEEL}"], "is fetched over plain http"),
    (["plan", "--env", "nccl:A B=1"], "'A B' is not an environment variable name"),
    (["plan", "--env", "nccl:X=a\0b"], "NUL"),
    (["plan", "--secret-env", "nccl:BAD-NAME"], "'BAD-NAME' is not an environment variable name"),
    (["--wheelhouse", "/tmp/" + "w" * 300, "list"], "--wheelhouse: path"),
    (["--cache-dir", "/tmp/" + "c" * 300, "list"], "--cache-dir: path"),
    (["release", "derive", "--vllm", "0.15.0 "], "--vllm: bad version '0.15.0 '"),
    (["release", "derive", "--vllm", "0.15.0", "--name", "../../evil"], "--name: bad release name '../../evil'"),
    (["release", "derive", "--vllm", "0.15.0", "--ref", "--upload-pack=x"], "--ref: bad git ref"),
    (["release", "derive", "--vllm", "0.15.0", "--vllm-git", "--upload-pack=x"], "--vllm-git: bad git URL"),
    (["release", "derive", "--vllm", "0.15.0", "--triton-git", "http://example.invalid/t.git"],
     "--triton-git: 'http://example.invalid/t.git' is fetched over plain http"),
    # release check reads upstream through the same options: refused before anything is fetched
    (["release", "check", "--vllm-git", "--upload-pack=touch x"],
     "--vllm-git: bad git URL '--upload-pack=touch x': it starts with '-'"),
    (["release", "check", "--triton-git", "ext::sh -c x"], "--triton-git: bad git URL 'ext::sh -c x': "),
    (["release", "check", "--vllm-git", "gopher://example.invalid/v.git"], "unknown scheme 'gopher'"),
    (["release", "check", "--vllm-git", "git://example.invalid/v.git"], "is fetched over plain git"),
])
def test_bad_options_are_refused(tmp_path, args, expected):
    r = invoke(tmp_path, *args)
    assert isinstance(r.exception, InputError), r.output
    assert r.exception.exit_code == 2 and expected in str(r.exception)


def test_the_index_url_is_used_normalised(tmp_path):
    seen = {}

    @cli.command("probe-index", hidden=True)
    def probe(**_kw):
        import click
        seen["url"] = click.get_current_context().obj.index_url
    try:
        r = invoke(tmp_path, "--index-url", "  HTTPS://index.example.invalid/simple ", "probe-index")
    finally:
        cli.commands.pop("probe-index")
    assert r.exit_code == 0, r.output
    assert seen["url"] == "https://index.example.invalid/simple"


# -- the transport check and the grammars, alone ---------------------------------------------------

def test_normalise_strips_and_lowercases_the_scheme_only():
    assert normalise("  HtTpS://Host.Example/Path ") == "https://Host.Example/Path"
    assert check_url(" https://x.invalid/s\n", False, "w", "h", INDEX_SCHEMES) == "https://x.invalid/s"
    assert check_url("http://x.invalid/s", True, "w", "h") == "http://x.invalid/s"
    with pytest.raises(InputError, match="no spaces inside"):
        check_url("https://x.invalid/a b", False, "w", "h")


@pytest.mark.parametrize("ref", ["v2.29.2-1", "release/2.10", A, "main", "v{version}", "ciflow/trunk/123"])
def test_good_git_refs(ref):
    assert check_git_ref(ref, "w") == ref


@pytest.mark.parametrize("ref", ["-x", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/", "a.",
                                 ".a", "a/.b", "a.lock", "@", "a//b", "a\x7fb", "x" * 256])
def test_bad_git_refs(ref):
    with pytest.raises(InputError, match="bad git ref"):
        check_git_ref(ref, "w")


@pytest.mark.parametrize("url", ["https://github.com/NVIDIA/nccl.git", "ssh://git@host:22/r.git", "file:///srv/r.git",
                                 "git@github.com:NVIDIA/nccl.git", "/srv/repos/nccl", "../nccl", "./a:b"])
def test_good_git_urls(url):
    assert check_git_url(url, "w") == url


def test_check_tree_allows_tabs_and_newlines_only_in_prose():
    prose = frozenset({("description",)})
    check_tree({"description": "a\n\tb"}, "f", prose)
    with pytest.raises(InputError, match="control character"):
        check_tree({"tag": "a\nb"}, "f", prose)
    with pytest.raises(InputError, match="control character"):
        check_tree({"description": "a\rb"}, "f", prose)


# -- `--` before every positional argument of the tools --------------------------------------------

class Recorder:
    """A runner that records each command line and answers git like a remote with tag v1 at A."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def note(self, _text: str) -> None:
        pass

    def run(self, cmd, cwd=None, **_kw) -> str:
        argv = [str(c) for c in cmd]
        self.calls.append(argv)
        if argv[:2] == ["git", "init"]:
            Path(argv[-1]).mkdir(parents=True)
        if argv[:2] == ["git", "ls-remote"]:
            return f"{A}\trefs/tags/v1\n"
        if argv[:2] == ["git", "rev-parse"]:
            return A + "\n"
        return ""


def after_dashes(argv: list[str]) -> list[str]:
    assert "--" in argv, argv
    return argv[argv.index("--") + 1:]


def test_git_gets_the_repository_and_ref_after_dashes(tmp_path):
    # A URL that only a grammar check would stop: after `--`, git reads it as a path.
    source = GitSource(str(tmp_path / "--upload-pack=touch x;"), "v1", submodules=False)
    runner = Recorder()
    cache = SourceCache(tmp_path / "c")
    cache.fetch(source, runner)  # type: ignore[arg-type]
    by = {c[1]: c for c in runner.calls}
    assert after_dashes(by["ls-remote"]) == [source.url, "v1", "v1^{}"]
    assert after_dashes(by["fetch"]) == [source.url, A]
    assert by["checkout"][-2:] == [A, "--"]


def test_git_refuses_a_source_that_is_an_option_even_when_made_in_code(tmp_path):
    runner = Recorder()
    with pytest.raises(InputError, match="starts with '-'"):
        SourceCache(tmp_path / "c").resolve(GitSource("--upload-pack=touch x;", "v1"), runner)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="starts with '-'"):
        SourceCache(tmp_path / "c").resolve(GitSource("https://example.invalid/r.git", "--output=x"),
                                            runner)  # type: ignore[arg-type]
    assert runner.calls == []


@pytest.mark.parametrize("installer", [PipInstaller(), UvInstaller("uv", Path("/c"))], ids=["pip", "uv"])
def test_installers_put_requirements_after_dashes(installer):
    runner = Recorder()
    installer.install(runner, Path("/v/bin/python"), ["--extra-index-url=http://x", "setuptools"], [Path("/wh")],
                      {})  # type: ignore[arg-type]
    assert after_dashes(runner.calls[0]) == ["--extra-index-url=http://x", "setuptools"]


def test_git_apply_gets_the_patch_after_dashes(tmp_path):
    patch = tmp_path / "-p0.patch"
    patch.write_text("")
    runner = Recorder()
    apply_patches(tmp_path / "tree", (Patch("-p0.patch", patch, "0" * 64),), runner, "vllm")  # type: ignore[arg-type]
    assert all(after_dashes(c) == [str(patch)] for c in runner.calls) and len(runner.calls) == 2


# -- no Dockerfile line from a tag or a label ------------------------------------------------------

@pytest.fixture(scope="module")
def t4_spec():
    release = load_release("0.15.0-t4", load_recipes(RECIPES), RECIPES)
    [spec] = image_specs(release, RECIPES)
    return release, spec


@pytest.mark.parametrize("settings, expected", [
    (Settings(registry="bad registry!!"), "--registry: bad registry 'bad registry!!'"),
    (Settings(registry="ghcr.io/me\nRUN x"), "--registry: bad registry"),
    (Settings(repository="x\nRUN touch /pwned"), "--repository: bad image repository"),
    (Settings(label_namespace="dev.x=1\nRUN y"), "--label-namespace: bad label namespace"),
    (Settings(registry="r.example" + "/abcdefgh" * 30), "bad registry"),
])
def test_bad_image_settings_are_refused(t4_spec, settings, expected):
    release, _ = t4_spec
    with pytest.raises(InputError) as e:
        image_specs(release, RECIPES, settings)
    assert expected in str(e.value)


def test_good_image_settings_pass(t4_spec):
    release, _ = t4_spec
    [spec] = image_specs(release, RECIPES, Settings(registry="localhost:5000/me/", repository="team/vllm"))
    assert spec.ref("localhost:5000/me/") == "localhost:5000/me/team/vllm:0.15.0-t4"


def test_a_derived_tag_outside_the_grammar_is_refused(tmp_path, recipes):
    release = load_release(str(write(tmp_path, EXTENDS + '[components.vllm]\nversion = "0.15.0+local"\n')), recipes,
                           RECIPES)
    with pytest.raises(InputError, match="bad image tag '0.15.0\\+local-t4'"):
        image_specs(release, RECIPES)


@pytest.mark.parametrize("field, value", [("labels", {"dev.x": "a\nRUN touch /pwned"}),
                                          ("labels", {"dev.x\nRUN y": "a"}),
                                          ("env", {"X": "a\nRUN touch /pwned"})])
def test_the_dockerfile_writer_refuses_a_value_that_would_add_a_line(t4_spec, field, value):
    _, spec = t4_spec
    bad = dataclasses.replace(spec, **{field: value})
    with pytest.raises(InputError):
        render_dockerfile(bad, find_base(spec.base, load_bases()), [])


# -- with the real git: a release file never makes the factory run a command ----------------------

@pytest.fixture
def local_repo(tmp_path):
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    return repo


@pytest.mark.slow  # real git, the real command line
def test_a_git_source_that_is_an_option_never_creates_its_canary(tmp_path, local_repo):
    canary = tmp_path / "PWNED"
    release = write(tmp_path, MINIMAL_RELEASE.replace(
        '[components.nccl]\n', f'[components.nccl]\nsource = {{ git = "--upload-pack=touch {canary};", '
                               f'ref = "{local_repo}" }}\n'))
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c")]
    for command in (["fetch", "--release", str(release)], ["build", "--release", str(release), "--no-host-check"]):
        r = run_cli(*common, *command, "nccl")
        assert r.returncode == 2, r.stderr
        assert "bad git URL '--upload-pack=touch" in r.stderr and "Traceback" not in r.stderr
    assert not canary.exists()


@pytest.mark.slow  # real git
def test_below_the_grammar_git_reads_an_option_like_url_as_a_path(tmp_path, local_repo, monkeypatch):
    # The second layer alone: with the load-time check switched off, `--` keeps git from taking
    # the URL as --upload-pack (without it, git ls-remote runs the command and the canary appears).
    canary = tmp_path / "PWNED"
    monkeypatch.setattr(GitSource, "check", lambda source: None)
    runner = Runner("t", tmp_path / "log")
    with pytest.raises(BuildError):
        SourceCache(tmp_path / "c").resolve(GitSource(f"--upload-pack=touch {canary};", str(local_repo)), runner)
    assert not canary.exists()
    # and the same resolve of the honest repository works
    assert SourceCache(tmp_path / "c2").resolve(GitSource(str(local_repo), "v1"), runner) is None
