<?php
// Bubble Shooter: the zdeploy demo app. Levels are files in levels/ (new
// levels arrive with each deploy); high scores are saved by the game into
// scores/ (user content that zdeploy carries into every new release).
$levels = array_map(fn($f) => basename($f, '.json'), glob(__DIR__ . '/levels/*.json'));
sort($levels);
$version = trim(@file_get_contents(__DIR__ . '/VERSION') ?: 'dev');
?><!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Bubble Shooter</title>
  <link rel="stylesheet" href="style.css">
</head>
<body>
  <header>
    <h1>Bubble Shooter</h1>
    <span class="version">release <?= htmlspecialchars($version) ?></span>
  </header>
  <main>
    <section class="board">
      <canvas id="game" width="480" height="600" aria-label="game board"></canvas>
      <div class="hud">
        <label>Level
          <select id="level">
            <?php foreach ($levels as $level): ?>
              <option value="<?= htmlspecialchars($level) ?>"><?= htmlspecialchars($level) ?></option>
            <?php endforeach ?>
          </select>
        </label>
        <span>Score <strong id="score">0</strong></span>
      </div>
    </section>
    <aside>
      <h2>High scores</h2>
      <ol id="scores"></ol>
      <form id="save" hidden>
        <label>Your name <input id="name" maxlength="20" required></label>
        <button>Save score</button>
      </form>
    </aside>
  </main>
  <script src="game.js"></script>
</body>
</html>
