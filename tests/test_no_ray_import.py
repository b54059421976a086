"""The plain server and the local bulk CLI never import Ray (it is an optional extra)."""
import subprocess
import sys


def test_plain_paths_do_not_import_ray():
    code = (
        "import sys, tei.cli, tei.app, tei.server.app, tei.batch.cli, tei.batch.local, tei.ray; "
        "s = tei.cli.parse_settings(['--port', '1']); assert s.ray_serve is None; "
        "r = tei.cli.parse_settings(['--ray-replicas', '2']); assert r.ray_serve.replicas == 2; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
