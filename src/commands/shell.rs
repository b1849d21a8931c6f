//! `bastion completions` and `bastion man`: generated from the same clap definitions as the
//! parser, so they never drift from it. `--cluster` completes from the clusters this machine
//! knows (its state dir, through the hidden `bastion __clusters`), never by calling AWS, in
//! bash, zsh, fish and PowerShell.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// What bash runs for `--cluster <TAB>`: the clusters of the state dir, then clap's own.
const BASH_CLUSTERS: &str = r#"
_bastion_with_clusters() {
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ "$prev" == "--cluster" ]]; then
        COMPREPLY=( $(compgen -W "$(bastion __clusters 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _bastion "$@"
}
complete -F _bastion_with_clusters -o nosort -o bashdefault -o default bastion
"#;

/// zsh: `--cluster`'s values come from this function instead of `_default`.
const ZSH_CLUSTERS: &str = r#"
_bastion_clusters() {
    local -a clusters
    clusters=(${(f)"$(bastion __clusters 2>/dev/null)"})
    _describe 'cluster' clusters
}
"#;

/// PowerShell: the value after `--cluster` comes from the state dir, ahead of clap's completer.
const POWERSHELL_CLUSTERS: &str = r#"
    $bastionPrev = $commandAst.CommandElements |
        Where-Object { $_.Extent.EndOffset -lt $cursorPosition } | Select-Object -Last 1
    if ($bastionPrev -and $bastionPrev.ToString() -eq '--cluster') {
        return @(bastion __clusters 2>$null) | Where-Object { $_ -like "$wordToComplete*" } |
            ForEach-Object { [CompletionResult]::new($_, $_, [CompletionResultType]::ParameterValue, $_) }
    }
"#;

const FISH_CLUSTERS: &str =
    "\ncomplete -c bastion -l cluster -x -a '(bastion __clusters 2>/dev/null)'\n";

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "bastion", &mut out);
    let out = match args.shell {
        clap_complete::Shell::Bash => {
            out.extend_from_slice(BASH_CLUSTERS.as_bytes());
            out
        }
        clap_complete::Shell::Fish => {
            out.extend_from_slice(FISH_CLUSTERS.as_bytes());
            out
        }
        clap_complete::Shell::Zsh => {
            let text = String::from_utf8(out)?
                .replace(":CLUSTER:_default'", ":CLUSTER:_bastion_clusters'");
            // After the `#compdef` line, which must stay first.
            match text.split_once('\n') {
                Some((first, rest)) => format!("{first}\n{ZSH_CLUSTERS}{rest}").into_bytes(),
                None => text.into_bytes(),
            }
        }
        clap_complete::Shell::PowerShell => {
            let text = String::from_utf8(out)?;
            let anchor = "param($wordToComplete, $commandAst, $cursorPosition)\n";
            text.replacen(anchor, &format!("{anchor}{POWERSHELL_CLUSTERS}"), 1)
                .into_bytes()
        }
        _ => out,
    };
    crate::ui::print_bytes(&out)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("no command named '{0}'; `bastion --help` lists them")]
pub struct NoSuchCommand(String);

fn page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let root = Cli::command();
    let subs: Vec<clap::Command> = root
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let named = |c: &clap::Command| {
        let name = format!("bastion-{}", c.get_name());
        c.clone().name(name)
    };
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bastion.1"), page(root.clone())?)?;
        for c in &subs {
            std::fs::write(
                dir.join(format!("bastion-{}.1", c.get_name())),
                page(named(c))?,
            )?;
        }
        eprintln!(
            "bastion: wrote {} manual pages to {}",
            subs.len() + 1,
            dir.display()
        );
        return Ok(());
    }
    let text = match &args.command {
        None => page(root)?,
        Some(name) => {
            let c = subs
                .iter()
                .find(|c| c.get_name() == name)
                .ok_or_else(|| NoSuchCommand(name.clone()))?;
            page(named(c))?
        }
    };
    crate::ui::print_bytes(&text)?;
    Ok(())
}

/// One cluster name a line, from the state dir's `<account>/<region>/<cluster>` folders.
pub fn clusters(state_root: &std::path::Path) -> anyhow::Result<()> {
    for name in crate::state::known_clusters(state_root) {
        crate::ui::print_text(name);
    }
    Ok(())
}
