//! `make install`'s layout used from outside the crate: examples/c/schedule.c built against a
//! temporary prefix with pkg-config (shared and static) and with CMake's find_package.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo, target_dir};

fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn check_schedule(exe: &Path) {
    let out = ok(Command::new(exe).current_dir(repo()));
    assert!(
        out.contains("total steps (rank 0 of 8, 240000 clips): 261582"),
        "{out}"
    );
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = ok(Command::new("pkg-config")
        .args(args)
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    out.split_whitespace().map(String::from).collect()
}

#[test]
fn installed_library_builds_the_c_example_with_pkg_config_and_cmake() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install");
    let _ = std::fs::remove_dir_all(&root);
    let prefix = root.join("prefix");
    ok(Command::new(repo().join("scripts/install.sh"))
        .arg(&prefix)
        .arg(target_dir()));
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    assert!(lib.join(format!("libmultigrid.so.{version}")).is_file());
    assert_eq!(
        std::fs::read_link(lib.join("libmultigrid.so")).unwrap(),
        PathBuf::from(format!("libmultigrid.so.{major}"))
    );
    let dynamic = ok(Command::new("readelf")
        .arg("-d")
        .arg(lib.join("libmultigrid.so")));
    assert!(
        dynamic.contains(&format!("Library soname: [libmultigrid.so.{major}]")),
        "{dynamic}"
    );
    assert!(prefix.join("include/multigrid.hpp").is_file());
    assert_eq!(
        pkg_config(&prefix, &["--modversion", "multigrid"]),
        [version]
    );

    let src = repo().join("examples/c/schedule.c");
    // pkg-config, shared.
    let exe = root.join("schedule_shared");
    ok(Command::new("cc")
        .arg("-std=c11")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(pkg_config(&prefix, &["--cflags", "--libs", "multigrid"]))
        .arg(format!("-Wl,-rpath,{}", lib.display())));
    check_schedule(&exe);
    let needed = ok(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        needed.contains(&format!("Shared library: [libmultigrid.so.{major}]")),
        "{needed}"
    );
    // pkg-config, static: no libmultigrid.so at run time.
    let exe = root.join("schedule_static");
    ok(Command::new("cc")
        .arg("-std=c11")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .args(pkg_config(
            &prefix,
            &["--cflags", "--libs", "multigrid-static"],
        )));
    check_schedule(&exe);
    assert!(!ok(Command::new("readelf").arg("-d").arg(&exe)).contains("libmultigrid"));

    // CMake: find_package with a version, both imported targets.
    let project = root.join("cmake_project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.16)\nproject(consumer C)\n\
             find_package(multigrid {major}.0 REQUIRED)\n\
             add_executable(schedule_shared \"{src}\")\n\
             target_link_libraries(schedule_shared PRIVATE multigrid::shared)\n\
             add_executable(schedule_static \"{src}\")\n\
             target_link_libraries(schedule_static PRIVATE multigrid::static)\n",
            src = src.display()
        ),
    )
    .unwrap();
    let build = root.join("cmake_build");
    ok(Command::new("cmake")
        .arg("-S")
        .arg(&project)
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())));
    ok(Command::new("cmake").arg("--build").arg(&build));
    check_schedule(&build.join("schedule_shared"));
    check_schedule(&build.join("schedule_static"));
    // C++17 bindings from the installed include directory, warnings as errors.
    let exe = root.join("train_loop_cpp");
    ok(Command::new("g++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
        .arg(repo().join("examples/cpp/train_loop.cpp"))
        .arg("-o")
        .arg(&exe)
        .args(pkg_config(&prefix, &["--cflags", "--libs", "multigrid"]))
        .arg(format!("-Wl,-rpath,{}", lib.display())));
    let out = Command::new(&exe)
        .args(["/nonexistent/data", "/nonexistent/run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("multigrid {version} ")),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/data/train.mgstore"),
        "{out:?}"
    );

    // The Python package as installed, on the system python (no numpy needed).
    let script = [
        "import multigrid as mg, sys",
        "s = mg.Schedule(sys.argv[1]); p = mg.Plan(s, 240000, world_size=8)",
        "print(mg.library_path(), p.total_steps, type(p.indices(0)).__name__)",
    ]
    .join("\n");
    let out = ok(Command::new("python3")
        .args(["-S", "-c", &script])
        .arg(repo().join("configs/kinetics_slowfast_8x8_r50_multigrid.json"))
        .env("PYTHONPATH", lib.join("multigrid/python"))
        .env_remove("MULTIGRID_LIB"));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        std::fs::canonicalize(words[0]).unwrap(),
        std::fs::canonicalize(lib.join("libmultigrid.so")).unwrap()
    );
    assert_eq!(words[1], "261582");
    assert_eq!(
        words[2], "memoryview",
        "system python without numpy gets memoryviews"
    );

    // A newer major version than installed is refused.
    std::fs::write(
        project.join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.16)\nproject(consumer C)\nfind_package(multigrid 99 REQUIRED)\n",
    )
    .unwrap();
    let refused = Command::new("cmake")
        .arg("-S")
        .arg(&project)
        .arg("-B")
        .arg(root.join("cmake_refused"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .output()
        .unwrap();
    assert!(!refused.status.success());
}
