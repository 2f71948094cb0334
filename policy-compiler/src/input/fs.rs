//! The file-system edge of input: files, directories (recursively) and standard input.

use std::io::Read;
use std::path::Path;

use super::{InputError, InputErrors, Source};

const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Reads each path: a file as is, a directory recursively (files ending in .yaml, .yml or .json, in
/// sorted order), and `-` as standard input.
pub fn read_paths(paths: &[String]) -> Result<Vec<Source>, InputErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path == "-" {
            match read_stdin() {
                Ok(s) => sources.push(s),
                Err(e) => errors.push(e),
            }
        } else {
            read_path(Path::new(path), true, &mut sources, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(InputErrors(errors))
    }
}

/// Reads all of standard input as one source named `<stdin>`.
pub fn read_stdin() -> Result<Source, InputError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|source| InputError::Io {
            path: "<stdin>".to_string(),
            source,
        })?;
    Ok(Source {
        name: "<stdin>".to_string(),
        text,
    })
}

fn read_path(path: &Path, named: bool, sources: &mut Vec<Source>, errors: &mut Vec<InputError>) {
    let io_error = |source| InputError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => return errors.push(io_error(e)),
        };
        let mut children: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            read_path(&child, false, sources, errors);
        }
        return;
    }
    // Inside directories only manifest files count; a file named on the command line is always read.
    let is_manifest = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e));
    if !named && !is_manifest {
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => sources.push(Source {
            name: path.display().to_string(),
            text,
        }),
        Err(e) => errors.push(io_error(e)),
    }
}
