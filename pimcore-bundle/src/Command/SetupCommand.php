<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Command;

use Pimingestd\PimcoreBundle\Ledger\Ledger;
use Symfony\Component\Console\Attribute\AsCommand;
use Symfony\Component\Console\Command\Command;
use Symfony\Component\Console\Input\InputInterface;
use Symfony\Component\Console\Output\OutputInterface;

/**
 * Creates the ledger tables (and the Messenger table) that do not exist yet, for apps without
 * Doctrine migrations. Safe to run again.
 */
#[AsCommand(name: 'pimingest:setup')]
final class SetupCommand extends Command
{
    /** @param iterable<object> $transports */
    public function __construct(private readonly Ledger $ledger, private readonly iterable $transports = [])
    {
        parent::__construct();
    }

    protected function configure(): void
    {
        $this->setDescription('Create the pimingest ledger tables (and the Messenger queue table) if missing');
    }

    protected function execute(InputInterface $input, OutputInterface $output): int
    {
        $created = $this->ledger->setup();
        foreach ($this->transports as $transport) {
            if (method_exists($transport, 'setup')) {
                $transport->setup();
            }
        }
        $output->writeln($created === [] ? 'pimingest: the ledger tables exist' : 'pimingest: created ' . implode(', ', $created));

        return Command::SUCCESS;
    }
}
